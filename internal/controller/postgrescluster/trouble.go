package postgrescluster

import (
	"slices"
	"strings"

	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

// instanceTrouble gathers what the instances report going wrong that
// their pods do not show: a postgres that fails to start on every attempt,
// settings postgres refuses, or a converge step that keeps failing, while
// the container runs and may even pass its probes.
type instanceTrouble struct {
	crashLooping, invalid, erring []string
}

// ReasonInvalidParameter: postgres refuses settings of spec.postgresql.parameters;
// the instances keep the ones it last accepted.
const ReasonInvalidParameter = "InvalidParameter"

// add notes the trouble rep reports, and returns it as the instance's
// message, or "" when it reports none.
func (t *instanceTrouble) add(name string, rep *instanceapi.Report) string {
	switch {
	case rep == nil:
		return ""
	case rep.StartError != "":
		t.crashLooping = append(t.crashLooping, name+": "+rep.StartError)
		return rep.StartError
	case rep.InvalidParameters != "":
		t.invalid = append(t.invalid, name+": "+rep.InvalidParameters)
		return rep.InvalidParameters
	case rep.Failing != "":
		t.erring = append(t.erring, name+": "+rep.Failing)
		return rep.Failing
	}
	return ""
}

// reason is the Degraded reason for the trouble, "" when there is none.
func (t *instanceTrouble) reason() string {
	switch {
	case len(t.crashLooping) > 0:
		return "InstanceCrashLooping"
	case len(t.invalid) > 0:
		return ReasonInvalidParameter
	case len(t.erring) > 0:
		return "InstanceError"
	}
	return ""
}

// message names each troubled instance and what it says. It holds no time
// or count, so that it changes, and the status is written, only when what
// the instances report changes.
func (t *instanceTrouble) message() string {
	return strings.Join(slices.Concat(t.crashLooping, t.invalid, t.erring), "; ")
}
