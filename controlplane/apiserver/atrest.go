package apiserver

import (
	"fmt"

	"kforge.dev/kforge/controlplane/apiserver/encryption"
	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// encryptionOptions turns encryption entries into a Transformer per
// stored key prefix: each stored resource follows the first entry that
// covers it (as upstream), and resources that share storage (the two
// Event versions) share their prefix's.
func encryptionOptions(entries []encryption.ResourceConfig, resources []*Resource) ([]storage.Option, error) {
	// A name that covers nothing is a typo that would leave Secrets in
	// plaintext: refuse it (the config's validation does for inline
	// entries; this catches a provider config file's).
	for i, e := range entries {
		for j, name := range e.Resources {
			found := false
			for _, r := range resources {
				found = found || (r.Review == nil && encryption.Covers(name, r.Group, r.Plural))
			}
			if !found {
				return nil, fmt.Errorf("apiserver: encryption.resources[%d].resources[%d]: %q is not a resource this apiserver serves", i, j, name)
			}
		}
	}
	var opts []storage.Option
	done := map[string]bool{}
	built := make([]*encryption.Transformer, len(entries))
	for _, r := range resources {
		prefix := r.KeyPrefix("")
		if r.Review != nil || done[prefix] {
			continue
		}
		for i, e := range entries {
			if !coversAny(e.Resources, r) {
				continue
			}
			if built[i] == nil {
				t, err := encryption.NewTransformer(e.Providers)
				if err != nil {
					return nil, fmt.Errorf("apiserver: encryption.resources[%d]: %w", i, err)
				}
				built[i] = t
			}
			opts = append(opts, storage.WithTransformer(prefix, built[i]))
			done[prefix] = true
			break
		}
	}
	return opts, nil
}

func coversAny(names []string, r *Resource) bool {
	for _, n := range names {
		if encryption.Covers(n, r.Group, r.Plural) {
			return true
		}
	}
	return false
}
