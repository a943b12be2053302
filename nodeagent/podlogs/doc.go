// Package podlogs writes and reads container logs in the CRI log format,
// the files kubelets keep under /var/log/pods/NS_NAME_UID/CONTAINER/N.log.
//
// Each line of a file is one record:
//
//	2016-10-06T00:17:09.669794202Z stdout F the line's text
//
// a timestamp (RFC 3339 with nanoseconds, UTC), the stream (stdout or
// stderr), a tag (F for a full line, P for a part of a longer one whose
// rest follows in the next records) and the text without its newline.
//
// A Writer appends records for a container's streams and rotates the file
// when it grows past a size: N.log becomes N.log.TIMESTAMP and the oldest
// rotated files are removed beyond a count. Read reads the rotated files
// and the current one in order with the options of kubectl logs (follow,
// tail, since, timestamps, limitBytes), following renames while it
// follows.
package podlogs
