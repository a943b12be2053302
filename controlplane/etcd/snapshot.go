package etcd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
)

// SnapshotInfo describes a snapshot file that VerifySnapshot checked.
type SnapshotInfo struct {
	// Size is the file's size, its sha256 trailer included.
	Size int64 `json:"size"`
	// SHA256 is the hex sha256 of the whole file.
	SHA256 string `json:"sha256"`
	// Revision is the newest revision in it; TotalKeys the live keys.
	Revision  int64 `json:"revision"`
	TotalKeys int   `json:"totalKeys"`
	// Hash is etcdutl's crc32 of the database's buckets.
	Hash uint32 `json:"hash"`
	// StorageVersion is the etcd storage version the snapshot records.
	StorageVersion string `json:"storageVersion,omitempty"`
}

// SaveSnapshot streams a snapshot from the member cli talks to (give it
// one endpoint: the snapshot is that member's point in time) into path,
// created 0600, and verifies it (VerifySnapshot). progress, when set, is
// called with the bytes written so far, after each chunk. It returns the
// member's etcd version with the file's description; path is removed
// when anything fails.
func SaveSnapshot(ctx context.Context, cli *clientv3.Client, path string, progress func(written int64)) (info *SnapshotInfo, version string, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("etcd snapshot: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("etcd snapshot: %w", err)
	}
	defer resp.Snapshot.Close()
	var w io.Writer = f
	if progress != nil {
		w = &progressWriter{w: f, fn: progress}
	}
	if _, err := io.Copy(w, resp.Snapshot); err != nil {
		return nil, "", fmt.Errorf("etcd snapshot: streaming from the member: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, "", fmt.Errorf("etcd snapshot: %w", err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return nil, "", fmt.Errorf("etcd snapshot: %w", err)
	}
	info, err = VerifySnapshot(path)
	if err != nil {
		return nil, "", err
	}
	return info, resp.Version, nil
}

type progressWriter struct {
	w  io.Writer
	n  int64
	fn func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	p.fn(p.n)
	return n, err
}

// VerifySnapshot checks a snapshot file as a restore will: the sha256
// trailer etcd appends to the stream (its size is a multiple of 512 plus
// 32) matches the rest of the file, and etcdutl reads it as a consistent
// bbolt database (its page check), which gives its revision and keys.
func VerifySnapshot(path string) (*SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot: %w", err)
	}
	size := fi.Size()
	if size%512 != sha256.Size {
		return nil, fmt.Errorf("etcd snapshot %s: %d bytes is not a snapshot with its sha256 trailer (a multiple of 512 plus 32)", path, size)
	}
	body, whole := sha256.New(), sha256.New()
	if _, err := io.CopyN(io.MultiWriter(body, whole), f, size-sha256.Size); err != nil {
		return nil, fmt.Errorf("etcd snapshot %s: %w", path, err)
	}
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, trailer); err != nil {
		return nil, fmt.Errorf("etcd snapshot %s: %w", path, err)
	}
	whole.Write(trailer)
	if sum := body.Sum(nil); !bytes.Equal(sum, trailer) {
		return nil, fmt.Errorf("etcd snapshot %s: sha256 %x does not match its trailer %x: the file is damaged", path, sum, trailer)
	}
	st, err := snapshot.NewV3(newZapLogger(slog.New(slog.DiscardHandler), nil)).Status(path)
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot %s: %w", path, err)
	}
	return &SnapshotInfo{
		Size: size, SHA256: hex.EncodeToString(whole.Sum(nil)),
		Revision: st.Revision, TotalKeys: st.TotalKey, Hash: st.Hash, StorageVersion: st.Version,
	}, nil
}

// RestoreRevisionBump is how far a restore moves the revision past the
// snapshot's: more than any cluster writes between a backup and its
// restore, so every revision a client saw before the restore is older
// than the restored head, and (marked compacted) makes its watch end
// with "compacted" and relist rather than wait for a revision to come.
const RestoreRevisionBump = 1_000_000_000

// RestoreOptions say how RestoreSnapshot rebuilds a member.
type RestoreOptions struct {
	// Snapshot is the snapshot file (with its sha256 trailer).
	Snapshot string
	// ClusterToken seeds the new cluster's member and cluster IDs: every
	// member of the restored cluster must be given the same one, and it
	// should differ from the old cluster's, so the restored cluster has a
	// new ID and no member of the old one can talk to it.
	ClusterToken string
	// MoveAside is where the current data dir goes (it must not exist);
	// required when the data dir holds anything.
	MoveAside string
	// Log receives etcdutl's log; nil discards it.
	Log *slog.Logger
}

// RestoreSnapshot rebuilds this member's data dir from a snapshot, as a
// member of a new cluster: the members and peer URLs of cfg's
// InitialCluster, cfg's name, o.ClusterToken, and the revision moved
// RestoreRevisionBump ahead and marked compacted. The member must be
// stopped. The new data dir is built beside the old one first; only then
// is the old one renamed to o.MoveAside (kept, never deleted) and the new
// one put in its place, so a failure leaves the old data dir where it was.
// A join marker is removed: the restored member starts as one of the new
// cluster's founders. It returns where the old data dir went ("" when
// there was none).
func RestoreSnapshot(cfg *Config, o RestoreOptions) (movedAside string, err error) {
	if o.ClusterToken == "" {
		return "", errors.New("etcd restore: no cluster token")
	}
	if _, err := VerifySnapshot(o.Snapshot); err != nil {
		return "", err
	}
	dataDir := filepath.Clean(cfg.DataDir)
	hasData, err := dirHasEntries(dataDir)
	if err != nil {
		return "", fmt.Errorf("etcd restore: %w", err)
	}
	if hasData {
		if o.MoveAside == "" {
			return "", fmt.Errorf("etcd restore: %s holds data and no place to move it aside was given", dataDir)
		}
		if _, err := os.Lstat(o.MoveAside); err == nil {
			return "", fmt.Errorf("etcd restore: %s exists already; the data dir is not moved over it", o.MoveAside)
		}
	}
	building := dataDir + ".restoring"
	if err := os.RemoveAll(building); err != nil {
		return "", fmt.Errorf("etcd restore: %w", err)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	err = snapshot.NewV3(newZapLogger(log.With("component", "etcd-restore"), nil)).Restore(snapshot.RestoreConfig{
		SnapshotPath:        o.Snapshot,
		Name:                cfg.Name,
		OutputDataDir:       building,
		PeerURLs:            cfg.advertisePeerURLs(),
		InitialCluster:      cfg.InitialCluster,
		InitialClusterToken: o.ClusterToken,
		RevisionBump:        RestoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		os.RemoveAll(building)
		return "", fmt.Errorf("etcd restore of member %s: %w", cfg.Name, err)
	}
	if err := os.Chmod(building, 0o700); err != nil {
		os.RemoveAll(building)
		return "", fmt.Errorf("etcd restore: %w", err)
	}
	if hasData {
		if err := os.Rename(dataDir, o.MoveAside); err != nil {
			os.RemoveAll(building)
			return "", fmt.Errorf("etcd restore: moving the old data dir aside: %w", err)
		}
		movedAside = o.MoveAside
	} else if err := os.RemoveAll(dataDir); err != nil { // an empty dir, if any
		os.RemoveAll(building)
		return "", fmt.Errorf("etcd restore: %w", err)
	}
	if err := os.Rename(building, dataDir); err != nil {
		return movedAside, fmt.Errorf("etcd restore: putting the restored data dir in place (the old one is at %s): %w", movedAside, err)
	}
	if err := os.Remove(JoinMarker(dataDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return movedAside, fmt.Errorf("etcd restore: %w", err)
	}
	return movedAside, nil
}

// dirHasEntries reports whether dir exists and is not empty.
func dirHasEntries(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return len(entries) > 0, nil
}

// RestoreToken is the cluster token of a restored cluster: the
// configured one with a suffix naming the restore, so each restore makes
// a cluster with IDs of its own.
func RestoreToken(configured, restoreID string) string {
	return strings.TrimSuffix(configured, "-") + "-restore-" + restoreID
}
