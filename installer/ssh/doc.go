// Package ssh is the installer's transport: one authenticated SSH
// connection per host (identity file or ssh-agent, optional bastion,
// keep-alives, retries with backoff on connect only), strict host key
// checking against a known_hosts file, commands as root through sudo for
// other users (with or without a password, which never appears in a
// command line, a log or an error), and atomic uploads through SFTP that
// are skipped when the remote file already has the same sha256.
//
// A Client is safe for concurrent use: every command runs in its own
// session over the one connection, and uploads share one SFTP client.
// Errors from commands are *CommandError values naming the host, the
// command, the exit code and the tail of stderr.
//
// Stream is the other way to run something: output flows to the caller's
// writers as it comes, the exit status is returned rather than turned into
// an error, and a PTY can be asked for — what `kforge lab ssh` needs for a
// shell or a command whose output is the point.
package ssh
