package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/installer"
	"kforge.dev/kforge/installer/ssh"
)

// scratch is where each host receives the binary; removed at the end.
const scratch = "/var/tmp/kforge-upload-bench"

func main() {
	file := flag.String("f", "cluster.yaml", "the cluster file")
	binary := flag.String("binary", "bin/kforge", "the binary to send")
	encodings := flag.String("encodings", "sftp,none,gzip,zstd", "encodings to measure, in order")
	flag.Parse()
	if err := run(*file, *binary, strings.Split(*encodings, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(file, binary string, encodings []string) error {
	ctx := context.Background()
	c, err := v1alpha1.Load(file)
	if err != nil {
		return err
	}
	f, err := ssh.LocalFile(binary)
	if err != nil {
		return err
	}
	hosts := installer.SSHHosts(c, false, nil, nil)
	defer func() {
		for _, h := range hosts {
			_ = h.Close()
		}
	}()
	for _, h := range hosts {
		if err := h.Connect(ctx); err != nil {
			return err
		}
	}
	hasZstd := true
	for _, h := range hosts {
		if _, err := h.Run(ctx, "command -v zstd"); err != nil {
			hasZstd = false
		}
	}
	fmt.Printf("binary %s: %.1f MiB; %d hosts at once\n", binary, mib(f.Size), len(hosts))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "encoding\ton the wire\tcompress\twall\tMiB/s per host\tMiB/s in all")
	for _, enc := range encodings {
		if enc == installer.EncodingZstd && !hasZstd {
			fmt.Fprintf(tw, "%s\t(not every host has zstd)\n", enc)
			continue
		}
		u := ssh.Upload{File: f, Remote: scratch, Mode: 0o755, Differs: true}
		wire, took := f.Size, time.Duration(0)
		if enc != installer.EncodingSFTP {
			t0 := time.Now()
			e, err := installer.EncodeBinary(enc, f)
			if err != nil {
				return err
			}
			took, u.Encoded, wire = time.Since(t0), e, e.Size
		}
		var wg sync.WaitGroup
		errs := make([]error, len(hosts))
		per := make([]time.Duration, len(hosts))
		t0 := time.Now()
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := time.Now()
				_, errs[i] = h.Upload(ctx, u)
				per[i] = time.Since(s)
			}()
		}
		wg.Wait()
		wall := time.Since(t0)
		var sum time.Duration
		for i, err := range errs {
			if err != nil {
				return fmt.Errorf("%s: %w", hosts[i].Name(), err)
			}
			sum += per[i]
		}
		avg := sum / time.Duration(len(hosts))
		fmt.Fprintf(tw, "%s\t%.1f MiB\t%s\t%s\t%.1f\t%.1f\n", enc, mib(wire), took.Round(10*time.Millisecond), wall.Round(10*time.Millisecond),
			mib(f.Size)/avg.Seconds(), mib(f.Size)*float64(len(hosts))/wall.Seconds())
	}
	tw.Flush()
	for _, h := range hosts {
		if _, err := h.Write(ctx, "rm -f "+scratch); err != nil {
			return err
		}
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
