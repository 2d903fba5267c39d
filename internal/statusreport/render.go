package statusreport

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// ANSI colours for a terminal; Write leaves them out for pipes and files.
const (
	reset  = "\x1b[0m"
	bold   = "\x1b[1m"
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
)

type painter bool

func (p painter) paint(code, s string) string {
	if !p || s == "" {
		return s
	}
	return code + s + reset
}

// state colours a word by what it means: good, under way, bad.
func (p painter) state(s string) string {
	switch s {
	case "Healthy", "Completed", "Succeeded", "True", "yes", "primary", "streaming":
		return p.paint(green, s)
	case "Degraded", "Failed", "no":
		return p.paint(red, s)
	case "":
		return "-"
	}
	return p.paint(yellow, s)
}

// Write renders r as the terminal view; colour adds ANSI colours.
func Write(w io.Writer, r Report, colour bool) error {
	p := painter(colour)
	var b strings.Builder
	section := func(title string) { fmt.Fprintf(&b, "\n%s\n", p.paint(bold, title)) }
	table := func(rows [][]string) {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, row := range rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}

	c := r.Cluster
	fmt.Fprintf(&b, "%s %s/%s\n", p.paint(bold, "Cluster"), c.Namespace, c.Name)
	image := c.Image
	if image == "" {
		image = fmt.Sprintf("default for PostgreSQL %d", c.PostgresVersion)
	}
	op := "none"
	if o := r.Operation; o != nil {
		deadline := "none (held until released)"
		if o.PhaseDeadline != nil {
			deadline = o.PhaseDeadline.UTC().Format(time.RFC3339)
		}
		op = fmt.Sprintf("%s, phase %s (from %s to %s) since %s, deadline %s", o.Kind, o.Phase, dash(o.From), dash(o.To),
			o.StartedAt.UTC().Format(time.RFC3339), deadline)
	}
	table([][]string{
		{"  phase:", p.state(c.Phase)},
		{"  primary:", dash(c.Primary)},
		{"  ready:", fmt.Sprintf("%d/%d", c.Ready, c.Instances)},
		{"  timeline:", fmt.Sprintf("%d", c.Timeline)},
		{"  WAL position:", dash(c.CurrentLSN) + ageNote(c.PositionsAge)},
		{"  image:", image},
		{"  operation:", op},
	})

	section("Instances")
	rows := [][]string{{"  NAME", "ROLE", "READY", "TIMELINE", "LSN", "LAG", "SYNC", "NODE", "RESTARTS", "PENDING RESTART", "MESSAGE"}}
	for _, in := range r.Instances {
		lsn := in.CurrentLSN
		if in.Role != holdfastv1.RolePrimary {
			lsn = in.ReplayedLSN
		}
		lag := "-"
		if in.Role != holdfastv1.RolePrimary {
			lag = byteSize(in.LagBytes)
		}
		rows = append(rows, []string{"  " + in.Name, p.state(string(in.Role)), p.state(yesNo(in.Ready)), fmt.Sprintf("%d", in.Timeline),
			dash(lsn), lag, yesNo(in.Sync), dash(in.Node), fmt.Sprintf("%d", in.Restarts), dash(strings.Join(in.PendingRestart, ",")), dash(in.Message)})
	}
	table(rows)

	section("Replication")
	if r.Replication.Quorum == 0 {
		b.WriteString("  asynchronous: a commit does not wait for any standby\n")
	} else {
		fmt.Fprintf(&b, "  synchronous: each commit waits for %d of %s\n", r.Replication.Quorum, dash(strings.Join(r.Replication.SyncStandbys, ", ")))
	}

	section("Volumes")
	rows = [][]string{{"  NAME", "CLAIM", "SIZE", "CAPACITY", "USED", "FREE", "USE%", "STATE"}}
	for _, in := range r.Instances {
		v := in.Volume
		if v == nil {
			continue
		}
		capacity, state := "-", "-"
		if v.Capacity != nil {
			capacity = v.Capacity.String()
		}
		switch {
		case v.Full:
			state = p.paint(red, "full, cannot grow")
		case v.Resizing != "":
			state = p.paint(yellow, v.Resizing)
		}
		rows = append(rows, []string{"  " + in.Name, v.Claim, v.Size.String(), capacity, byteSize(v.UsedBytes), byteSize(v.AvailableBytes),
			fmt.Sprintf("%d%%", v.UsedPercent), state})
	}
	if len(rows) > 1 {
		table(rows)
	} else {
		b.WriteString("  no volume reported yet\n")
	}

	section("Backups")
	fmt.Fprintf(&b, "  repository: %s\n", dash(r.Backups.Repository))
	if len(r.Backups.Last) > 0 {
		rows := [][]string{{"  METHOD", "LAST", "PHASE", "STOPPED", "AGE", "MESSAGE"}}
		for _, l := range r.Backups.Last {
			rows = append(rows, []string{"  " + l.Method, l.Name, p.state(l.Phase), dash(l.Stopped), dash(l.Age), dash(l.Message)})
		}
		table(rows)
	} else {
		b.WriteString("  no backups\n")
	}
	for _, s := range r.Backups.Schedules {
		suspended := ""
		if s.Suspended {
			suspended = p.paint(yellow, " (suspended)")
		}
		fmt.Fprintf(&b, "  schedule %s: %s %q, last completed %s%s\n", s.Name, s.Method, s.Schedule, dash(s.LastCompleted), suspended)
	}

	section("Operations (newest first)")
	if len(r.History) == 0 {
		b.WriteString("  none yet\n")
	} else {
		rows := [][]string{{"  KIND", "FROM", "TO", "STARTED", "TOOK", "OUTCOME", "REASON"}}
		for _, h := range r.History {
			rows = append(rows, []string{"  " + string(h.Kind), dash(h.From), dash(h.To), h.StartedAt.UTC().Format(time.RFC3339), dash(h.Duration),
				p.state(string(h.Outcome)), dash(h.Reason)})
		}
		table(rows)
	}

	if len(r.Certificates) > 0 {
		section("Certificates")
		rows := [][]string{{"  SECRET", "NOT AFTER", "RENEW AT"}}
		for _, c := range r.Certificates {
			rows = append(rows, []string{"  " + c.Secret, timeOrDash(c.NotAfter), timeOrDash(c.RenewAt)})
		}
		table(rows)
	}

	section("Conditions")
	rows = [][]string{{"  TYPE", "STATUS", "SINCE", "REASON", "MESSAGE"}}
	for _, c := range r.Conditions {
		status := c.Status
		if c.Type == "Degraded" && status == "True" {
			status = p.paint(red, status)
		} else if c.Type != "Degraded" {
			status = p.state(status)
		}
		rows = append(rows, []string{"  " + c.Type, status, c.Since, dash(c.Reason), dash(c.Message)})
	}
	table(rows)

	_, err := io.WriteString(w, b.String())
	return err
}

func ageNote(age string) string {
	if age == "" {
		return ""
	}
	return " (observed " + age + " ago)"
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

func timeOrDash(t *metav1.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// byteSize says n in binary units, as lag is read.
func byteSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
