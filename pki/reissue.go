package pki

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// ReissueOptions choose the leaves Reissue replaces: every leaf by
// default, narrowed by Hosts and ExpiringWithin (both apply when both
// are set).
type ReissueOptions struct {
	// Hosts, when not empty, keeps only the per-host leaves of these
	// hosts (Cert.Host); the client certificates a role shares on several
	// hosts (scheduler, proxy, admin, ...) are left alone, since replacing
	// one changes it on every host of the role.
	Hosts []string
	// ExpiringWithin, when positive, keeps only leaves whose not-after is
	// before now plus this.
	ExpiringWithin time.Duration
	// DryRun reports what would be reissued and writes nothing.
	DryRun bool
	// Progress, when set, gets one line per reissued leaf.
	Progress io.Writer
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Rotated is one leaf Reissue replaced (or, in a dry run, would replace).
type Rotated struct {
	ID      string   `json:"id"`
	Where   string   `json:"where"`
	Hosts   []string `json:"hosts,omitempty"`
	Purpose string   `json:"purpose"`
	// Old and New are the serials (decimal) and not-after dates; New is
	// empty in a dry run.
	OldSerial   string    `json:"oldSerial"`
	OldNotAfter time.Time `json:"oldNotAfter"`
	NewSerial   string    `json:"newSerial,omitempty"`
	NewNotAfter time.Time `json:"newNotAfter,omitzero"`
}

// Reissue issues new leaves, each with a new key, from the CAs the
// directory holds, and then brings the kubeconfigs and the hosts' copies
// up to date (as Init does). The CAs and the service-account key pair are
// never touched, and leaves not chosen keep their files byte for byte.
//
// The directory must be complete and sound first: a problem Init would
// refuse, or a certificate not issued yet, is an error and nothing is
// written (run `kforge pki init` or `kforge up` first). A name in
// opts.Hosts that has no host folder is an error too.
func Reissue(ctx context.Context, inv *Inventory, opts ReissueOptions) ([]Rotated, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	for _, h := range opts.Hosts {
		if !slices.Contains(inv.Hosts, h) {
			return nil, fmt.Errorf("unknown host %q: the cluster's hosts are %s", h, strings.Join(inv.Hosts, ", "))
		}
	}
	cur, err := readAll(inv, now())
	if err != nil {
		return nil, err
	}
	var missing []string
	for i := range inv.Certs {
		if cur.pairs[inv.Certs[i].ID()] == nil {
			missing = append(missing, inv.Certs[i].ID())
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %d certificate(s) of %s not issued yet (%s): run `kforge pki init -f cluster.yaml` (or `kforge up`) first",
			ErrNoPKI, len(missing), inv.Dir, strings.Join(firstN(missing, 3), ", "))
	}

	var out []Rotated
	for i := range inv.Certs {
		spec := &inv.Certs[i]
		if spec.IsCA {
			continue
		}
		if len(opts.Hosts) > 0 && !slices.Contains(opts.Hosts, spec.Host) {
			continue
		}
		old := cur.pairs[spec.ID()]
		if opts.ExpiringWithin > 0 && !old.cert.NotAfter.Before(now().Add(opts.ExpiringWithin)) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		r := Rotated{ID: spec.ID(), Where: spec.Where, Hosts: spec.Hosts, Purpose: spec.Purpose,
			OldSerial: old.cert.SerialNumber.String(), OldNotAfter: old.cert.NotAfter.UTC()}
		if !opts.DryRun {
			p, err := issue(spec, cur.pairs[spec.CA])
			if err != nil {
				return out, err
			}
			if err := writePair(inv, spec, p); err != nil {
				return out, err
			}
			r.NewSerial, r.NewNotAfter = p.cert.SerialNumber.String(), p.cert.NotAfter.UTC()
			fmt.Fprintf(progress, "reissued %s: serial %s, not after %s\n", r.ID, r.NewSerial, r.NewNotAfter.Format(time.RFC3339))
		}
		out = append(out, r)
	}
	if opts.DryRun || len(out) == 0 {
		return out, nil
	}
	// The new leaves match the spec, so Init keeps every certificate and
	// rewrites only the kubeconfigs and copies built from the new ones.
	if _, err := Init(ctx, inv, InitOptions{Now: opts.Now}); err != nil {
		return out, fmt.Errorf("updating kubeconfigs and host copies: %w", err)
	}
	return out, nil
}
