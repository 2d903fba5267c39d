package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyTree copies the folder src to dst, which must not exist, keeping each
// entry's owner, mode (with setuid, setgid and sticky bits) and times: a
// PGDATA must come back 0700 and owned by the uid its pod runs as, or
// postgres refuses to start. Sockets are skipped (their servers make them
// anew), hard links become separate files, and extended attributes are not
// copied. It returns the bytes of the regular files copied.
func copyTree(ctx context.Context, src, dst string) (int64, error) {
	return copyFolder(ctx, src, dst, false)
}

// copyInto is copyTree into dst, an empty folder that exists: a volume's
// mounted filesystem, which takes src's owner, mode and times.
func copyInto(ctx context.Context, src, dst string) (int64, error) {
	return copyFolder(ctx, src, dst, true)
}

func copyFolder(ctx context.Context, src, dst string, into bool) (int64, error) {
	var copied int64
	// A folder's mode and times are set once its entries are in: a read-only
	// folder would refuse them, and each new entry moves its mtime.
	type folder struct {
		path string
		info fs.FileInfo
	}
	var folders []folder
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			// Copied into a volume, the top folder is the filesystem's own.
			if p != src || !into {
				if err := os.Mkdir(target, 0o700); err != nil {
					return err
				}
			}
			folders = append(folders, folder{target, info})
			return chown(target, info)
		case mode.IsRegular():
			n, err := copyFile(p, target)
			copied += n
			if err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
			// A link has no mode of its own on Linux; chmod would follow it.
			if err := chown(target, info); err != nil {
				return err
			}
			return setTimes(target, info)
		case mode&fs.ModeNamedPipe != 0:
			if err := unix.Mkfifo(target, 0o600); err != nil {
				return fmt.Errorf("making fifo %s: %w", target, err)
			}
		case mode&fs.ModeSocket != 0:
			return nil
		default:
			return fmt.Errorf("%s is a %v, which a volume copy does not carry", p, mode.Type())
		}
		return setMeta(target, info)
	})
	if err != nil {
		return copied, fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	for i := len(folders) - 1; i >= 0; i-- {
		if err := setMeta(folders[i].path, folders[i].info); err != nil {
			return copied, fmt.Errorf("copying %s to %s: %w", src, dst, err)
		}
	}
	return copied, nil
}

func copyFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	// io.Copy between two files uses copy_file_range, which shares extents
	// on filesystems that can.
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// setMeta gives path the owner, mode and times of info; owner first, since
// chown clears setuid and setgid bits.
func setMeta(path string, info fs.FileInfo) error {
	if err := chown(path, info); err != nil {
		return err
	}
	mode := info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if err := os.Chmod(path, mode); err != nil {
		return err
	}
	return setTimes(path, info)
}

func chown(path string, info fs.FileInfo) error {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner in the file's stat")
	}
	return os.Lchown(path, int(st.Uid), int(st.Gid))
}

func setTimes(path string, info fs.FileInfo) error {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no times in the file's stat")
	}
	times := []unix.Timespec{unix.Timespec(st.Atim), unix.Timespec(st.Mtim)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting the times of %s: %w", path, err)
	}
	return nil
}
