package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/pki"
)

func newCertCommand(streams Streams, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Inspect and rotate the cluster's certificates",
		Long: `cert works on the certificates of the cluster's PKI: "kforge cert status
--local" reads the local PKI directory, "kforge cert rotate" reissues leaf
certificates and rolls them out to a running cluster.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCertStatusCommand(streams, g), newCertRotateCommand(streams, g))
	return cmd
}

// localFromSpec is what a bare --local stands for.
const localFromSpec = "spec.pki.dir"

type certStatusFlags struct {
	file   clusterFileFlag
	local  string
	warn   string
	output string
}

func newCertStatusCommand(streams Streams, _ *globalFlags) *cobra.Command {
	var f certStatusFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List every certificate with its host, purpose and expiry; exit 1 if any expires soon",
		Long: `status lists every certificate of the cluster's PKI — the CAs, the shared client
certificates, then host by host in cluster-file order — with the host(s) it
goes to, its purpose, its not-after date and the whole days left.

--local reads the PKI directory on this machine: bare --local uses
spec.pki.dir, --local=DIR another directory (note the "="). The remote form,
which reads the certificates deployed on the hosts over SSH, arrives with the
installer.

The exit code is 1 when any certificate expires within --warn (default 30d;
"90d", "720h" or any Go duration) or is missing, so it fits a cron job or a
monitoring check. --output json prints the same rows as a JSON array.`,
		Example: `  kforge cert status -f cluster.yaml --local
  kforge cert status -f cluster.yaml --local=/secure/lab-pki --warn 90d
  kforge cert status -f cluster.yaml --local --output json | jq '.[] | select(.daysLeft < 60)'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && cmd.Flags().Changed("local") && f.local == localFromSpec {
				return fmt.Errorf("unexpected argument %q: give a directory as --local=%s (with '=')", args[0], args[0])
			}
			return cobra.NoArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			warn, err := parseDays(f.warn)
			if err != nil {
				return fmt.Errorf("--warn: %w", err)
			}
			if f.output != "table" && f.output != "json" {
				return fmt.Errorf("--output: unknown format %q (table or json)", f.output)
			}
			if !cmd.Flags().Changed("local") {
				return errors.New("cert status reads certificates over SSH only once the installer lands; for now use --local to read the local PKI directory (spec.pki.dir, or --local=DIR)")
			}
			c, err := f.file.load()
			if err != nil {
				return err
			}
			dir := f.local
			if dir == localFromSpec {
				dir = ""
			}
			inv, err := pki.NewInventory(installer.PKISpec(c), dir)
			if err != nil {
				return err
			}
			now := time.Now()
			rows, err := pki.Status(inv, now)
			if err != nil {
				return err
			}
			if f.output == "json" {
				if rows == nil {
					rows = []pki.CertStatus{}
				}
				enc := json.NewEncoder(streams.Out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rows); err != nil {
					return err
				}
			} else if err := writeCertTable(streams, rows); err != nil {
				return err
			}
			var soon []string
			for _, r := range rows {
				if r.ExpiresWithin(now, warn) {
					soon = append(soon, r.ID)
				}
			}
			if len(soon) > 0 {
				return &ExitError{Code: 1, Err: fmt.Errorf("%d certificate(s) missing or expiring within %s: %s",
					len(soon), f.warn, strings.Join(soon, ", "))}
			}
			return nil
		},
	}
	f.file.bind(cmd)
	cmd.Flags().StringVar(&f.local, "local", "", "read the local PKI directory: bare --local for spec.pki.dir, --local=DIR for another")
	cmd.Flags().Lookup("local").NoOptDefVal = localFromSpec
	cmd.Flags().StringVar(&f.warn, "warn", "30d", `exit 1 if a certificate expires within this long ("30d" or a Go duration such as "720h")`)
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	return cmd
}

func writeCertTable(streams Streams, rows []pki.CertStatus) error {
	tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOST\tPURPOSE\tNOT-AFTER\tDAYS-LEFT")
	for _, r := range rows {
		notAfter, days := "missing", "-"
		if !r.Missing {
			notAfter = r.NotAfter.UTC().Format("2006-01-02 15:04 UTC")
			days = strconv.Itoa(r.DaysLeft)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Host, r.Purpose, notAfter, days)
	}
	return tw.Flush()
}

// parseDays parses a duration that may also be whole days: "30d".
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a number of days such as 30d", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is neither days (30d) nor a duration (720h)", s)
	}
	return d, nil
}

type certRotateFlags struct {
	file     clusterFileFlag
	hosts    []string
	expiring bool
	warn     string
	dryRun   bool
	ca       bool
	output   string
	binary   string
}

func newCertRotateCommand(streams Streams, g *globalFlags) *cobra.Command {
	var f certRotateFlags
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Reissue leaf certificates and roll them out with no downtime",
		Long: `rotate reissues leaf certificates, each with a new key, from the CAs the PKI
directory holds (the CAs and the service-account key stay), rebuilds the
kubeconfigs that embed client certificates (admin.kubeconfig beside
cluster.yaml too), and rolls the new files out with kforge up's own converge:
only changed files are uploaded, and only daemons that read a changed file at
start restart: masters one at a time, each healthy before the next, workers a
third at a time. etcd, the apiservers and the agent API reload their
certificates in place, and rotate waits until each serves its new one. The
deployed kforge binary is kept.

Which leaves: every one by default; --hosts only the named hosts' own
certificates (not the client certificates a role shares on several hosts);
--expiring only those that expire within --warn. Both narrow together.

It prints the serial and not-after of each certificate before and after.
--dry-run shows which certificates would be reissued, which files uploaded and
which daemons restarted, and changes nothing. The run is journaled beside
cluster.yaml like kforge up's.

CA rotation (--ca) is not available: rotate refuses it rather than do part of it.`,
		Example: `  kforge cert rotate -f cluster.yaml --dry-run
  kforge cert rotate -f cluster.yaml
  kforge cert rotate -f cluster.yaml --hosts w1,w2
  kforge cert rotate -f cluster.yaml --expiring --warn 720h --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.ca {
				return errors.New("--ca: rotating the CAs is not implemented; kforge cert rotate reissues leaf certificates under the current CAs (run it without --ca)")
			}
			if f.output != "text" && f.output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", f.output)
			}
			var within time.Duration
			if f.expiring {
				d, err := parseDays(f.warn)
				if err != nil {
					return fmt.Errorf("--warn: %w", err)
				}
				within = d
			} else if cmd.Flags().Changed("warn") {
				return errors.New("--warn applies with --expiring")
			}
			c, err := f.file.loadForSSH()
			if err != nil {
				return err
			}
			opts := installer.RotateOptions{Hosts: f.hosts, ExpiringWithin: within, Up: installer.UpOptions{
				Cluster: c, DryRun: f.dryRun, Binary: f.binary, JSON: f.output == "json",
				TTY: isTerminal(streams.ErrOut), Out: streams.Out, ErrOut: streams.ErrOut,
				Version: Version, Log: g.logger(streams.ErrOut), PromptPassword: passwordPrompt(streams),
			}}
			res, err := installer.RotateCerts(cmd.Context(), opts)
			if res != nil {
				if werr := writeRotated(streams.Out, res, f.output == "json", f.dryRun); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		},
	}
	f.file.bind(cmd)
	cmd.Flags().StringSliceVar(&f.hosts, "hosts", nil, "only these hosts' own certificates (comma-separated names)")
	cmd.Flags().BoolVar(&f.expiring, "expiring", false, "only certificates that expire within --warn")
	cmd.Flags().StringVar(&f.warn, "warn", "30d", `with --expiring: how soon ("30d" or a Go duration such as "720h")`)
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show what would be reissued, uploaded and restarted; change nothing")
	cmd.Flags().BoolVar(&f.ca, "ca", false, "rotate the CAs (not available: refused)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "text (status lines on stderr, a table on stdout) or json (one event per line, then the certificates)")
	cmd.Flags().StringVar(&f.binary, "binary", "", "the kforge binary whose preflight checks run (default: this one; it is not pushed)")
	return cmd
}

// writeRotated prints the certificates a rotation reissued: a table, or
// one JSON line {"certificates": [...]}.
func writeRotated(w io.Writer, res *installer.RotateResult, asJSON, dry bool) error {
	certs := res.Certs
	if certs == nil {
		certs = []pki.Rotated{}
	}
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{"certificates": certs, "dryRun": dry})
	}
	if len(certs) == 0 {
		_, err := fmt.Fprintln(w, "No certificate to reissue.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tHOST\tOLD SERIAL\tOLD NOT-AFTER\tNEW SERIAL\tNEW NOT-AFTER")
	for _, c := range certs {
		newSerial, newAfter := "(dry run)", "-"
		if c.NewSerial != "" {
			newSerial, newAfter = shortSerial(c.NewSerial), c.NewNotAfter.Format("2006-01-02 15:04 UTC")
		} else if !dry {
			newSerial = "(not reissued)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Where, shortSerial(c.OldSerial),
			c.OldNotAfter.Format("2006-01-02 15:04 UTC"), newSerial, newAfter)
	}
	return tw.Flush()
}

// shortSerial keeps a table narrow: the last 12 digits of a serial.
func shortSerial(s string) string {
	if len(s) > 12 {
		return "…" + s[len(s)-12:]
	}
	return s
}
