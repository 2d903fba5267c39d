// Package cnpg runs CloudNativePG in the sandbox, for the failover
// benchmark beside Holdfast and for the test that keeps that harness
// working. It builds CloudNativePG's images from the manager that
// hack/build-cnpg.sh builds from its pinned module and from Holdfast's
// postgres image, pushes them to the sandbox's registry under
// CloudNativePG's own names, installs its release manifest as published,
// and drives a Cluster through the API server.
//
// It is rig, not product: nothing outside internal/rig and the tests may
// import it.
package cnpg
