// Package faults does to sandbox pods what the failover tests and
// benchmarks inject: kill every process of a pod, or cut its network off.
package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// KillPod sends SIGKILL to every process in the network namespace at
// netnsPath (a sandbox pod's: all its containers and what they started),
// and says how many there were.
func KillPod(netnsPath string) (int, error) {
	procs, err := PodProcesses(netnsPath)
	if err != nil {
		return 0, err
	}
	killed := 0
	for _, p := range procs {
		if syscall.Kill(p.PID, syscall.SIGKILL) == nil {
			killed++
		}
	}
	if killed == 0 {
		return 0, fmt.Errorf("no process in %s", netnsPath)
	}
	return killed, nil
}

// Process is one process of a pod, as this machine sees it.
type Process struct {
	PID, PPID int
	Args      []string
}

// PodProcesses lists the processes in the network namespace at netnsPath.
func PodProcesses(netnsPath string) ([]Process, error) {
	var want syscall.Stat_t
	if err := syscall.Stat(netnsPath, &want); err != nil {
		return nil, fmt.Errorf("the pod's network namespace: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		p := Process{PID: pid}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil {
			p.Args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// The parent's pid is the second field after the command name,
			// which is in parentheses and may hold anything.
			if i := strings.LastIndexByte(string(stat), ')'); i >= 0 {
				if f := strings.Fields(string(stat)[i+1:]); len(f) > 1 {
					p.PPID, _ = strconv.Atoi(f[1])
				}
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// FindProcess returns the PID of the process whose program is named name
// and one of whose arguments contains argument (a sandbox's folder, a
// port flag): the sandbox's control plane runs as plain processes.
func FindProcess(name, argument string) (int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != name {
			continue
		}
		for _, a := range args[1:] {
			if strings.Contains(a, argument) {
				return strconv.Atoi(filepath.Base(dir))
			}
		}
	}
	return 0, fmt.Errorf("no %s process with an argument containing %q", name, argument)
}

// Partition cuts the named network namespace off: nothing in or out on its
// eth0, while its loopback keeps working, so its processes go on running.
// The returned func heals it.
func Partition(netns string) (heal func() error, err error) {
	return insertRules(netns, [][]string{{"INPUT", "-i", "eth0", "-j", "DROP"}, {"OUTPUT", "-o", "eth0", "-j", "DROP"}})
}

// CutFrom cuts the named network namespace off from the given peers only
// (addresses, "ip" for every port or "ip:port" for one TCP port): its
// packets to them are dropped, and theirs to it. The returned func heals it.
func CutFrom(netns string, peers ...string) (heal func() error, err error) {
	var rules [][]string
	for _, peer := range peers {
		ip, port, hasPort := strings.Cut(peer, ":")
		out := []string{"OUTPUT", "-d", ip, "-j", "DROP"}
		in := []string{"INPUT", "-s", ip, "-j", "DROP"}
		if hasPort {
			out = []string{"OUTPUT", "-d", ip, "-p", "tcp", "--dport", port, "-j", "DROP"}
			in = []string{"INPUT", "-s", ip, "-p", "tcp", "--sport", port, "-j", "DROP"}
		}
		rules = append(rules, out, in)
	}
	return insertRules(netns, rules)
}

// Refuse makes the given peers (addresses, or "ip:port" for one TCP port)
// refuse the named network namespace's TCP connections, as a stopped
// server does: each attempt is reset at once, where a dropped packet would
// leave the client waiting out its timeout. The returned func heals it.
func Refuse(netns string, peers ...string) (heal func() error, err error) {
	var rules [][]string
	for _, peer := range peers {
		ip, port, hasPort := strings.Cut(peer, ":")
		rule := []string{"OUTPUT", "-d", ip, "-p", "tcp"}
		if hasPort {
			rule = append(rule, "--dport", port)
		}
		rules = append(rules, append(rule, "-j", "REJECT", "--reject-with", "tcp-reset"))
	}
	return insertRules(netns, rules)
}

// insertRules inserts rules into netns's filter table; the returned func removes them.
func insertRules(netns string, rules [][]string) (heal func() error, err error) {
	iptables := func(op string, rule []string) error {
		args := append([]string{"netns", "exec", netns, "iptables", op}, rule...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s in %s: %v: %s", op, netns, err, out)
		}
		return nil
	}
	for i, r := range rules {
		if err := iptables("-I", r); err != nil {
			for _, done := range rules[:i] {
				_ = iptables("-D", done)
			}
			return nil, err
		}
	}
	healed := false
	return func() error {
		if healed {
			return nil
		}
		healed = true
		var first error
		for _, r := range rules {
			if err := iptables("-D", r); err != nil && first == nil {
				first = err
			}
		}
		return first
	}, nil
}
