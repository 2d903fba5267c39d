package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Each volume is a filesystem of its claim's size in a sparse image file,
// <Root>/.images/<name>.img, mounted through a loop device on the volume's
// folder <Root>/<name>, which the node binds into pods: df in a pod shows
// the claim's size, writes past it fail with ENOSPC, and the resizer grows
// it while pods use it.
//
// The filesystem is btrfs, not ext4: the kernel grows a mounted ext4 only
// for a process with CAP_SYS_RESOURCE, which this project's machines
// withhold even from root, while it grows a btrfs for CAP_SYS_ADMIN. (XFS
// asks CAP_SYS_ADMIN too, but mkfs.xfs makes nothing under 300 MB.) Mixed
// block groups let mkfs.btrfs make a filesystem from 16 MiB, whose df
// total is the image's size.
const (
	// minVolumeSize is the smallest filesystem mkfs.btrfs makes; a smaller
	// claim gets this much.
	minVolumeSize = 16 << 20
	// minGrownSize is the smallest size the kernel grows a btrfs to; a
	// smaller request grows the volume this far, as a cloud disk grows in
	// whole steps.
	minGrownSize = 256 << 20
)

// CheckTools says what this machine lacks to make and grow volumes: better
// when the sandbox starts than at its first claim.
func CheckTools() error {
	for _, name := range []string{"mkfs.btrfs", "btrfs"} {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("the sandbox's volumes need %s, from Debian's btrfs-progs (hack/install-deps.sh installs it): %w", name, err)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("the sandbox's volumes need loop devices: %w", err)
	}
	return nil
}

// imagesDir is dot-named, so that no volume or snapshot handle names it.
func imagesDir(root string) string { return filepath.Join(root, ".images") }

// volume is where one volume lives.
type volume struct {
	dir   string // the folder pods get, where the filesystem is mounted
	image string
	// whole exists once the volume is complete: formatted, mounted and,
	// when restored, filled.
	whole string
}

// volumeOf is the volume named name, a plain name, under root.
func volumeOf(root, name string) volume {
	images := imagesDir(root)
	return volume{
		dir:   filepath.Join(root, name),
		image: filepath.Join(images, name+".img"),
		whole: filepath.Join(images, name+".whole"),
	}
}

// provisionedSize is the capacity a claim's volume gets.
func provisionedSize(request resource.Quantity) resource.Quantity {
	if request.Value() < minVolumeSize {
		return *resource.NewQuantity(minVolumeSize, resource.BinarySI)
	}
	return request
}

// grownSize is the capacity a volume grows to for a request.
func grownSize(request resource.Quantity) resource.Quantity {
	if request.Value() < minGrownSize {
		return *resource.NewQuantity(minGrownSize, resource.BinarySI)
	}
	return request
}

// imageBytes rounds a size up to whole MiB: a loop device counts 512-byte
// sectors and btrfs 4 KiB blocks, and "1G" is neither.
func imageBytes(q resource.Quantity) int64 {
	const mib = 1 << 20
	return (q.Value() + mib - 1) / mib * mib
}

// infeasibleError is a request that cannot be met as made: asking again
// for the same gets the same answer, so the claim's status says so.
type infeasibleError struct{ msg string }

func (e *infeasibleError) Error() string { return e.msg }

// checkRoom refuses growth that the disk holding the images cannot hold.
// The images are sparse, so without this a volume would promise what the
// disk does not have and fill it silently.
func checkRoom(images string, growth int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(images, &st); err != nil {
		return fmt.Errorf("reading the free space of %s: %w", images, err)
	}
	if free := int64(st.Bavail) * st.Bsize; growth > free {
		return &infeasibleError{fmt.Sprintf("it needs %s more of this machine's disk, which has %s free", sizeText(growth), sizeText(free))}
	}
	return nil
}

// sizeText is a byte count for people to read.
func sizeText(n int64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// ensure makes the volume size bytes large and mounts it, filled by fill
// when fill is not nil. A whole volume that exists is reused (mounted
// again if it is not): the provisioner library calls Provision again for a
// volume whose PV it could not create. Anything less is made anew.
func (v volume) ensure(ctx context.Context, size int64, fill func() error) (err error) {
	if _, err := os.Stat(v.whole); err == nil {
		return v.mount(ctx)
	}
	if err := v.remove(); err != nil {
		return fmt.Errorf("clearing an earlier attempt: %w", err)
	}
	defer func() {
		if err != nil {
			_ = v.remove()
		}
	}()
	if err := os.MkdirAll(filepath.Dir(v.image), 0o700); err != nil {
		return err
	}
	if err := checkRoom(filepath.Dir(v.image), size); err != nil {
		return err
	}
	if err := v.format(ctx, size); err != nil {
		return err
	}
	if err := v.mount(ctx); err != nil {
		return err
	}
	// Pods reach the volume as their fsGroup once the node hands it over.
	if err := os.Chmod(v.dir, 0o770); err != nil {
		return err
	}
	if fill != nil {
		if err := fill(); err != nil {
			return err
		}
	}
	return os.WriteFile(v.whole, nil, 0o600)
}

// format makes the image file and a filesystem in it.
func (v volume) format(ctx context.Context, size int64) error {
	f, err := os.OpenFile(v.image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sizing %s: %w", v.image, err)
	}
	out, err := exec.CommandContext(ctx, "mkfs.btrfs", "--quiet", "--force", "--mixed", v.image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.btrfs %s: %w: %s", v.image, err, out)
	}
	return nil
}

// mount mounts the image on the volume's folder, unless it is mounted.
func (v volume) mount(ctx context.Context) error {
	mountMu.Lock()
	defer mountMu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("not mounting %s: %w", v.dir, err)
	}
	if mounted, err := isMountPoint(v.dir); err != nil || mounted {
		return err
	}
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return err
	}
	dev, err := attachLoop(v.image)
	if err != nil {
		return err
	}
	// Once mounted, the filesystem holds the device; closing it then leaves
	// the device bound until the unmount, and closing it unmounted frees it.
	defer dev.Close()
	if err := unix.Mount(dev.Name(), v.dir, "btrfs", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", v.image, v.dir, err)
	}
	return nil
}

// remove unmounts the volume and removes its folder and image. Unmounted
// first: removing the folder of a mounted filesystem would empty the
// filesystem, not remove it.
func (v volume) remove() error {
	mountMu.Lock()
	defer mountMu.Unlock()
	if err := unmountAll(v.dir); err != nil {
		return err
	}
	// The mark goes first: a volume half removed is no longer whole.
	for _, p := range []string{v.whole, v.image} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return os.RemoveAll(v.dir)
}

// canGrow says why the volume cannot grow to size, or nil.
func (v volume) canGrow(size int64) error {
	st, err := os.Stat(v.image)
	if err != nil {
		return fmt.Errorf("the volume's image: %w", err)
	}
	if size <= st.Size() {
		return nil
	}
	return checkRoom(filepath.Dir(v.image), size-st.Size())
}

// grow grows the mounted volume to size bytes, its image, loop device and
// filesystem, while pods use it. Each step is done again harmlessly, so a
// grow that failed halfway is simply run again.
func (v volume) grow(ctx context.Context, size int64) error {
	if err := v.canGrow(size); err != nil {
		return err
	}
	if err := v.growImage(size); err != nil {
		return err
	}
	return v.growFilesystem(ctx, size)
}

// growImage makes the image file size bytes, unless it is already.
func (v volume) growImage(size int64) error {
	st, err := os.Stat(v.image)
	if err != nil {
		return err
	}
	if st.Size() >= size {
		return nil
	}
	if err := os.Truncate(v.image, size); err != nil {
		return fmt.Errorf("growing %s: %w", v.image, err)
	}
	return nil
}

// growFilesystem has the loop device, then the mounted filesystem, take
// the image's size.
func (v volume) growFilesystem(ctx context.Context, size int64) error {
	dev, err := loopOf(v.dir, v.image)
	if err != nil {
		return err
	}
	if err := refreshLoopSize(dev); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "btrfs", "filesystem", "resize", "max", v.dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("btrfs filesystem resize max %s: %w: %s", v.dir, err, out)
	}
	// A device that kept its old size would make that a quiet no-op; the
	// filesystem's own size tells.
	var st unix.Statfs_t
	if err := unix.Statfs(v.dir, &st); err != nil {
		return err
	}
	if got := int64(st.Blocks) * st.Bsize; got < size {
		return fmt.Errorf("%s is %s after growing it, not %s", v.dir, sizeText(got), sizeText(size))
	}
	return nil
}
