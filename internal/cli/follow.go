package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// follow waits on a cluster that was asked to do something: it checks
// pgc, then reads the cluster again every `every`, until check says it is
// done or fails. Each step check names ("" names none) is written to
// progress when it changes, so that a long wait says what it waits for.
// When ctx ends, follow returns late's error, given the last step said.
func follow(ctx context.Context, c client.Client, key client.ObjectKey, pgc *holdfastv1.PostgresCluster, every time.Duration, progress io.Writer,
	check func(*holdfastv1.PostgresCluster) (step string, done bool, err error), late func(said string) error) error {
	said := ""
	for {
		step, done, err := check(pgc)
		if step != "" && step != said {
			fmt.Fprintln(progress, step)
			said = step
		}
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return late(said)
		case <-time.After(every):
		}
		if err := c.Get(ctx, key, pgc); err != nil {
			return fmt.Errorf("reading cluster %s: %w", key, err)
		}
	}
}
