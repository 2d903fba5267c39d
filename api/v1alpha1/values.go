package v1alpha1

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// Timestamp is an RFC 3339 time, with or without fractional seconds. It is
// a string, not a metav1.Time or MicroTime, so that decoding can never fail
// on a form the schema admits: one undecodable object stops the operator's
// informer from listing every object of its kind. The pattern narrows the
// schema's date-time (which also admits a lower-case t and z, or no zone) to
// what Parse reads.
//
// +kubebuilder:validation:Format=date-time
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
type Timestamp string

// Parse reads the time.
func (t Timestamp) Parse() (time.Time, error) {
	v, err := time.Parse(time.RFC3339Nano, string(t))
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time: %w", string(t), err)
	}
	return v, nil
}

// Age is a length of time as people write it: whole numbers of weeks (w),
// days (d), hours (h), minutes (m) and seconds (s), alone or together
// (30d, 2w, 36h, 1d12h). Like Timestamp it is a string that always decodes.
//
// +kubebuilder:validation:MinLength=2
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^([0-9]{1,6}[wdhms])+$`
type Age string

var ageTerm = regexp.MustCompile(`([0-9]+)([wdhms])`)

var ageUnits = map[string]time.Duration{
	"w": 7 * 24 * time.Hour, "d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second,
}

// Duration is the age as a time.Duration. An age past what a Duration
// holds (about 292 years) saturates: it keeps everything either way.
func (a Age) Duration() (time.Duration, error) {
	terms := ageTerm.FindAllStringSubmatch(string(a), -1)
	if len(terms) == 0 || ageTerm.ReplaceAllString(string(a), "") != "" {
		return 0, fmt.Errorf("%q is not an age such as 30d, 2w or 36h", string(a))
	}
	var total time.Duration
	for _, t := range terms {
		n, err := strconv.ParseInt(t[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", string(a), err)
		}
		unit := ageUnits[t[2]]
		if n > int64(math.MaxInt64/unit) || total > math.MaxInt64-time.Duration(n)*unit {
			return math.MaxInt64, nil
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}
