package app

import (
	"encoding/json"
	"errors"
	"fmt"
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
		Short: "Inspect the cluster's certificates",
		Long: `cert works on the certificates of the cluster's PKI. Today: "kforge cert
status --local" reads the local PKI directory. Rotation ("cert rotate") and the
remote form of status, over SSH, arrive with the installer.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCertStatusCommand(streams, g))
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
