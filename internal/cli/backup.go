package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

func newBackupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Take and inspect backups"}
	cmd.AddCommand(newBackupCreateCmd())
	return cmd
}

func newBackupCreateCmd() *cobra.Command {
	var kubeconfig, namespace, schedule, method, target string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create [CLUSTER]",
		Short: "Create a Backup of CLUSTER (or as BackupSchedule --schedule says) and, with --wait, wait for its end",
		Long: `create makes a Backup resource; the operator carries it out. With --schedule it takes the cluster,
method and deadline from that BackupSchedule and labels the Backup as the schedule's, so that the
schedule's retention prunes it: the schedule's CronJob runs this. With --wait it exits 0 once the
backup has completed and 1 when it failed, saying why.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, namespace, err := kubeClient(kubeconfig, namespace)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: namespace}}
			switch {
			case schedule != "" && len(args) == 0:
				var s holdfastv1.BackupSchedule
				if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: schedule}, &s); err != nil {
					return fmt.Errorf("reading BackupSchedule %s: %w", schedule, err)
				}
				b.Name = s.Name + "-" + time.Now().UTC().Format("20060102-150405")
				b.Labels = map[string]string{resources.LabelBackupSchedule: s.Name, resources.LabelCluster: s.Spec.Cluster.Name}
				b.Spec = holdfastv1.BackupSpec{Cluster: s.Spec.Cluster, Method: s.Spec.Method, Target: s.Spec.Target, DeadlineSeconds: s.Spec.DeadlineSeconds}
			case schedule == "" && len(args) == 1:
				b.GenerateName = args[0] + "-"
				b.Labels = map[string]string{resources.LabelCluster: args[0]}
				b.Spec = holdfastv1.BackupSpec{Cluster: holdfastv1.ClusterReference{Name: args[0]},
					Method: holdfastv1.BackupMethod(method), Target: holdfastv1.BackupTarget(target)}
			default:
				return errors.New("name a CLUSTER or a --schedule, not both")
			}
			if err := c.Create(ctx, b); err != nil {
				return fmt.Errorf("creating the Backup: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created Backup %s/%s of cluster %s\n", b.Namespace, b.Name, b.Spec.Cluster.Name)
			if !wait {
				return nil
			}
			return waitBackup(ctx, c, b, cmd)
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config, or the pod's ServiceAccount)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "the namespace (default: the kubeconfig's)")
	cmd.Flags().StringVar(&schedule, "schedule", "", "take the backup for this BackupSchedule")
	cmd.Flags().StringVar(&method, "method", string(holdfastv1.BackupLogical), "logical, volumeSnapshot or pgbackrest")
	cmd.Flags().StringVar(&target, "target", string(holdfastv1.TargetPreferStandby), "prefer-standby or primary")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backup has completed or failed")
	cmd.Flags().DurationVar(&timeout, "timeout", 25*time.Hour, "how long to wait")
	return cmd
}

// waitBackup polls the Backup until it is done, saying each phase and
// message as it changes: a Pending backup's message is why it waits.
func waitBackup(ctx context.Context, c client.Client, b *holdfastv1.Backup, cmd *cobra.Command) error {
	key := client.ObjectKeyFromObject(b)
	var said string
	for !b.Done() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("backup %s is still %s (%s): %w", b.Name, b.Status.Phase, b.Status.Message, ctx.Err())
		case <-time.After(2 * time.Second):
		}
		if err := c.Get(ctx, key, b); err != nil {
			return fmt.Errorf("reading Backup %s: %w", b.Name, err)
		}
		if now := backupStep(b); now != said && !b.Done() {
			fmt.Fprintf(cmd.ErrOrStderr(), "backup %s %s\n", b.Name, now)
			said = now
		}
	}
	if b.Status.Phase == holdfastv1.BackupFailed {
		return fmt.Errorf("backup %s failed (%s): %s", b.Name, b.Status.Reason, b.Status.Message)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "backup %s completed: %d bytes from %s\n", b.Name, b.Status.SizeBytes, b.Status.Instance)
	return nil
}

// backupStep is a Backup's phase and, when it has one, its message.
func backupStep(b *holdfastv1.Backup) string {
	phase := string(b.Status.Phase)
	if phase == "" {
		phase = "not yet taken up by the operator"
	}
	if b.Status.Message == "" {
		return phase
	}
	return phase + ": " + b.Status.Message
}
