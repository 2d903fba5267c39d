package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// attachLoop binds a free loop device to image and returns it open. The
// device clears itself when its last user lets go (LO_FLAGS_AUTOCLEAR): a
// filesystem mounted from it before the returned file is closed, or nobody.
func attachLoop(image string) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	// Another process may take the free device between asking for it and
	// binding it; then ask again.
	for range 8 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening a loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}}
		copy(cfg.Info.File_name[:], image)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("binding %s to %s: %w", dev.Name(), image, err)
		}
	}
	return nil, errors.New("no free loop device: each was taken before it could be bound")
}

// loopOf is the loop device mounted on dir, checked to be image's: growing
// another device would grow another volume.
func loopOf(dir, image string) (string, error) {
	ms, err := mountsAt(dir, false)
	if err != nil {
		return "", err
	}
	if len(ms) == 0 {
		return "", fmt.Errorf("%s is not mounted", dir)
	}
	dev := ms[len(ms)-1].source
	name := filepath.Base(dev)
	if !strings.HasPrefix(name, "loop") {
		return "", fmt.Errorf("%s is mounted from %s, not from a loop device", dir, dev)
	}
	backing, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
	if err != nil {
		return "", fmt.Errorf("the file behind %s: %w", dev, err)
	}
	want, err := realPath(image)
	if err != nil {
		return "", err
	}
	if got := strings.TrimSpace(string(backing)); got != want {
		return "", fmt.Errorf("%s is mounted from %s, whose file is %s, not %s", dir, dev, got, want)
	}
	return dev, nil
}

// refreshLoopSize has a loop device take its file's new size.
func refreshLoopSize(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("%s taking its file's new size: %w", dev, err)
	}
	return nil
}
