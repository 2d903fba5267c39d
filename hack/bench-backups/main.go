// Command bench-backups runs the backup benchmark of issue 6 on this
// machine and writes its report under bench/:
//
//	go run ./hack/bench-backups [-scale 70] [-out bench] [-keep]
//
// It needs root (the sandbox's namespaces) and the packages of
// hack/install-deps.sh. Scale 70 is a database of about 1.05 GiB; it runs
// for about a quarter of an hour on 2 cores.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/bench/backups"
)

func main() {
	scale := flag.Int("scale", 70, "pgbench scale of the database (70 is about 1.05 GiB)")
	out := flag.String("out", "bench", "folder for the report")
	keep := flag.Bool("keep", false, "keep the sandbox's logs and data")
	flag.Parse()

	release, err := bench.Lock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-backups:", err)
		os.Exit(1)
	}
	defer release()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	bins, err := exec.Command("hack/build-k8s.sh", "--dir").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-backups: hack/build-k8s.sh --dir:", err)
		os.Exit(1)
	}
	started := time.Now()
	ms, err := backups.Run(ctx, backups.Options{Holdfast: "bin/holdfast", BinDir: strings.TrimSpace(string(bins)),
		Manifest: "config/default", Scale: *scale, Keep: *keep})
	if len(ms) > 0 {
		incomplete := ""
		if err != nil {
			incomplete = fmt.Sprintf("INCOMPLETE: %v\n", err)
		}
		text := fmt.Sprintf("backup benchmark\n%s%s; %s; pgbench scale %d, database %.2f GB\n%stook %s, go run ./hack/bench-backups %s\n\n%s",
			bench.Machine(started), bench.Version("/usr/lib/postgresql/15/bin/postgres", "--version"), bench.Version("pgbackrest", "version"),
			*scale, float64(ms[0].DBBytes)/1e9, incomplete, time.Since(started).Round(time.Second), strings.Join(os.Args[1:], " "), backups.Table(ms))
		fmt.Print(text)
		path, werr := bench.WriteReport(*out, "backups", text)
		if werr != nil {
			err = errors.Join(err, werr)
		} else {
			fmt.Fprintf(os.Stderr, "report written to %s\n", path)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-backups:", err)
		os.Exit(1)
	}
}
