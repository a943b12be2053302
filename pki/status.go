package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"time"
)

// CertStatus is one certificate as found on disk.
type CertStatus struct {
	// ID is the certificate's ID in the inventory ("m1/etcd-server").
	ID string `json:"id"`
	// Name and Host are the certificate's Name and Where (owner host,
	// "masters", "workers", "all" or "operator").
	Name    string   `json:"name"`
	Host    string   `json:"host"`
	Hosts   []string `json:"hosts,omitempty"`
	Purpose string   `json:"purpose"`
	CA      string   `json:"ca,omitempty"`
	File    string   `json:"file"`
	// Missing is true when the certificate file does not exist; NotAfter
	// and DaysLeft are then zero.
	Missing  bool      `json:"missing,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	// DaysLeft is whole days until NotAfter, negative once expired.
	DaysLeft int `json:"daysLeft"`
}

// ExpiresWithin reports whether the certificate is missing or expires
// before now+d.
func (s *CertStatus) ExpiresWithin(now time.Time, d time.Duration) bool {
	return s.Missing || s.NotAfter.Before(now.Add(d))
}

// Status reads every certificate of the inventory from the PKI directory,
// in inventory order: the CAs, the shared client certificates, then host
// by host in spec order. A missing directory is ErrNoPKI; a file that is
// not a certificate is an error naming it.
func Status(inv *Inventory, now time.Time) ([]CertStatus, error) {
	if _, err := os.Stat(inv.Dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s: run `kforge pki init -f cluster.yaml` first", ErrNoPKI, inv.Dir)
	}
	var out []CertStatus
	for i := range inv.Certs {
		c := &inv.Certs[i]
		st := CertStatus{ID: c.ID(), Name: c.Name, Host: c.Where, Hosts: c.Hosts, Purpose: c.Purpose, CA: c.CA, File: c.CertFile}
		path := inv.Path(c.CertFile)
		data, err := readOptional(path)
		if err != nil {
			return nil, err
		}
		if data == nil {
			st.Missing = true
			out = append(out, st)
			continue
		}
		crt, err := parseCertPEM(data)
		if err != nil {
			return nil, &FileError{Path: path, Err: err}
		}
		st.NotAfter = crt.NotAfter.UTC()
		st.DaysLeft = int(math.Floor(crt.NotAfter.Sub(now).Hours() / 24))
		out = append(out, st)
	}
	return out, nil
}
