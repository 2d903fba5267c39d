package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/statusreport"
)

func newStatusCmd() *cobra.Command {
	var (
		flags  clusterFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status CLUSTER",
		Short: "Show a cluster: primary, instances, replication, backups, operations, certificates, conditions",
		Long: `status reads the PostgresCluster, its pods, its Backups and BackupSchedules, and shows them in one
view: coloured on a terminal, plain in a pipe. -o json or -o yaml prints the same report for scripts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "", "json", "yaml":
			default:
				return fmt.Errorf("-o %q: want json or yaml, or nothing for the terminal view", output)
			}
			ctx, cancel, c, namespace, err := flags.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			var pgc holdfastv1.PostgresCluster
			if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: args[0]}, &pgc); err != nil {
				return fmt.Errorf("reading cluster %s/%s: %w", namespace, args[0], err)
			}
			var pods corev1.PodList
			if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{resources.LabelCluster: pgc.Name}); err != nil {
				return fmt.Errorf("listing the cluster's pods: %w", err)
			}
			var backups holdfastv1.BackupList
			if err := c.List(ctx, &backups, client.InNamespace(namespace)); err != nil {
				return fmt.Errorf("listing backups: %w", err)
			}
			var schedules holdfastv1.BackupScheduleList
			if err := c.List(ctx, &schedules, client.InNamespace(namespace)); err != nil {
				return fmt.Errorf("listing backup schedules: %w", err)
			}
			r := statusreport.Build(&pgc, pods.Items, backups.Items, schedules.Items, time.Now())
			return writeStatus(cmd.OutOrStdout(), r, output)
		},
	}
	flags.add(cmd, time.Minute)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml; the terminal view when unset")
	return cmd
}

func writeStatus(w io.Writer, r statusreport.Report, output string) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "yaml":
		b, err := yaml.Marshal(r)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return statusreport.Write(w, r, isTerminal(w))
}

// isTerminal: colour only for a person, not for a pipe or a file.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == ""
}
