package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Streams are the standard streams a command uses: results go to Out,
// progress and logs to ErrOut.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// ExitError carries an exit code other than 1 (or a deliberate 1 with no
// message, such as "a certificate expires soon").
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Main runs kforge with the process's arguments and streams and returns
// the exit code. The first SIGINT or SIGTERM cancels the context; a second
// one kills the process the default way.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore default handling: a second signal ends the process
	}()
	streams := Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := Run(ctx, streams, os.Args[1:]); err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			if ee.Err != nil {
				fmt.Fprintln(streams.ErrOut, "Error:", ee.Err)
			}
			return ee.Code
		}
		fmt.Fprintln(streams.ErrOut, "Error:", err)
		return 1
	}
	return 0
}

// Run executes one kforge command line.
func Run(ctx context.Context, streams Streams, args []string) error {
	root := NewRootCommand(streams)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// globalFlags are flags every command sees.
type globalFlags struct {
	verbosity int
}

func (g *globalFlags) logger(w io.Writer) *slog.Logger {
	level := slog.LevelWarn
	switch {
	case g.verbosity >= 2:
		level = slog.LevelDebug
	case g.verbosity == 1:
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// NewRootCommand builds the kforge command tree.
func NewRootCommand(streams Streams) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "kforge",
		Short: "Install and run a highly available Kubernetes-compatible cluster over SSH",
		Long: `kforge installs a highly available cluster over plain SSH — PKI, HA etcd,
apiservers behind a load balancer, and the node daemons — and is every one of
those daemons itself: each is a role of this one binary.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.PersistentFlags().CountVarP(&g.verbosity, "verbose", "v", "more detail on stderr (-v info, -vv debug)")

	// One line per top-level command; each lives in its own file.
	root.AddCommand(
		newVersionCommand(streams),
		newValidateCommand(streams, g),
		newPKICommand(streams, g),
		newCertCommand(streams, g),
		newKubeconfigCommand(streams, g),
		newLabCommand(streams, g),
		newEtcdCommand(streams, g),
		newAPIServerCommand(streams, g),
		newLBCommand(streams, g),
		newControllerManagerCommand(streams, g),
		newSchedulerCommand(streams, g),
		newAgentCommand(streams, g),
		newProxyCommand(streams, g),
		newDNSCommand(streams, g),
		newIngressCommand(streams, g),
		newLocalCommand(streams, g),
		newUpCommand(streams, g),
		newStatusCommand(streams, g),
		newResetCommand(streams, g),
		newNodeCommand(streams, g),
		newUpgradeCommand(streams, g),
		newLogsCommand(streams, g),
		newBackupCommand(streams, g),
		newRestoreCommand(streams, g),
	)
	return root
}
