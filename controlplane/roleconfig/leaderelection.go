package roleconfig

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Leader-election defaults shared by the leader-elected roles (scheduler,
// controller manager): upstream's 15s/10s/2s in kube-system.
const (
	DefaultLeaseNamespace = "kube-system"
	DefaultLeaseDuration  = 15 * time.Second
	DefaultRenewDeadline  = 10 * time.Second
	DefaultRetryPeriod    = 2 * time.Second
)

// LeaderElection configures the Lease that lets one of several instances
// of a role (one per master) act at a time.
type LeaderElection struct {
	// Enabled is true by default; turn it off only when a single instance
	// runs.
	Enabled       bool          `yaml:"enabled" json:"enabled"`
	LeaseName     string        `yaml:"leaseName" json:"leaseName"`
	Namespace     string        `yaml:"namespace" json:"namespace"`
	LeaseDuration time.Duration `yaml:"leaseDuration" json:"leaseDuration"`
	RenewDeadline time.Duration `yaml:"renewDeadline" json:"renewDeadline"`
	RetryPeriod   time.Duration `yaml:"retryPeriod" json:"retryPeriod"`
	// Identity names this instance in the Lease; the host name plus a
	// random suffix when empty.
	Identity string `yaml:"identity,omitempty" json:"identity,omitempty"`
}

// DefaultLeaderElection is leader election on, with the shared defaults
// and the role's Lease name.
func DefaultLeaderElection(leaseName string) LeaderElection {
	return LeaderElection{
		Enabled: true, LeaseName: leaseName, Namespace: DefaultLeaseNamespace,
		LeaseDuration: DefaultLeaseDuration, RenewDeadline: DefaultRenewDeadline, RetryPeriod: DefaultRetryPeriod,
	}
}

// Validate returns the problems of an enabled configuration under
// fldPath: the rules client-go's leaderelection enforces.
func (le LeaderElection) Validate(fldPath *field.Path) field.ErrorList {
	if !le.Enabled {
		return nil
	}
	var errs field.ErrorList
	if le.LeaseName == "" {
		errs = append(errs, field.Required(fldPath.Child("leaseName"), ""))
	}
	if le.Namespace == "" {
		errs = append(errs, field.Required(fldPath.Child("namespace"), ""))
	}
	if le.RetryPeriod <= 0 {
		errs = append(errs, field.Invalid(fldPath.Child("retryPeriod"), le.RetryPeriod.String(), "must be positive"))
	}
	if le.RenewDeadline <= time.Duration(1.2*float64(le.RetryPeriod)) {
		errs = append(errs, field.Invalid(fldPath.Child("renewDeadline"), le.RenewDeadline.String(),
			fmt.Sprintf("must be longer than 1.2 × retryPeriod (%s)", le.RetryPeriod)))
	}
	if le.LeaseDuration <= le.RenewDeadline {
		errs = append(errs, field.Invalid(fldPath.Child("leaseDuration"), le.LeaseDuration.String(),
			fmt.Sprintf("must be longer than renewDeadline (%s)", le.RenewDeadline)))
	}
	return errs
}
