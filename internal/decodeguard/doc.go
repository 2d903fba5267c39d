// Package decodeguard keeps one object the operator cannot decode from
// blinding it to every other object of that kind.
//
// A typed informer lists a whole kind at once; when one stored object does
// not decode into its Go type (a value the schema admitted but the type
// refuses, or an object stored before a schema rule tightened), the list
// fails, the informer retries forever, and the operator stops managing every
// cluster. The guard lists and watches its kinds as unstructured objects,
// decodes each one on its own, leaves out the ones that fail (to the
// controllers they look deleted), and reports each with a Warning Event and
// a status condition on the object itself.
//
// It must not import the controllers: they never see what it leaves out.
package decodeguard
