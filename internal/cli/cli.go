// Package cli holds what every nf4pipe command shares: the exit statuses, the
// mapping of an error to one through the command's own table, the version,
// signal handling, argument order, and input/output opening. It knows no
// library's errors: each command (cmd/<tool>) lists the sentinels it maps.
package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	ucli "github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// Exit statuses, the same for every tool and documented in the README.
const (
	ExitOK        = 0 // success
	ExitFailure   = 1 // any other failure
	ExitUsage     = 2 // bad flags or arguments
	ExitInput     = 3 // unreadable or invalid input: stream, safetensors, config
	ExitOutput    = 4 // the output could not be written (disk full, permission, ...)
	ExitNoFit     = 5 // plan: the model does not fit the GPUs
	ExitIntegrity = 6 // verify: integrity failure
	ExitQuality   = 7 // verify: tensors outside the expected error envelope
)

// Error carries an exit status with an error. Library packages return plain
// errors; commands wrap them with WithCode where the status is not obvious.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// WithCode wraps err with an exit status (nil stays nil).
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Usagef returns a usage error.
func Usagef(format string, args ...any) error {
	return &Error{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// Status is one row of a command's exit-status table: the status, what it
// means (for --help), and the errors (sentinels, matched with errors.Is) that
// end the command with it.
type Status struct {
	Code    int
	Meaning string
	Errs    []error
}

// Table is a command's exit statuses, in the order --help lists them.
type Table []Status

// Code maps err to an exit status: a status the command gave (WithCode) wins,
// then the table's sentinels in order, then what the system says (a full or
// read-only disk is the output's fault; a missing or unreadable file, the
// input's, since outputs wrap their own errors with ExitOutput).
func (t Table) Code(err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	var ec ucli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	for _, s := range t {
		for _, e := range s.Errs {
			if errors.Is(err, e) {
				return s.Code
			}
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EFBIG), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EROFS):
		return ExitOutput
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return ExitInput
	}
	return ExitFailure
}

// Help is the table as --help prints it.
func (t Table) Help() string {
	var b strings.Builder
	b.WriteString("Exit status:")
	for _, s := range t {
		fmt.Fprintf(&b, "\n   %-3d %s", s.Code, s.Meaning)
	}
	return b.String()
}

// Code maps an error to an exit status with no command's table.
func Code(err error) int { return Table(nil).Code(err) }

// errSilent marks a failure that the command has reported itself.
var errSilent = errors.New("exit status already reported")

// Silent returns an error that makes Run exit with code and print nothing, for
// a command that has reported the outcome itself (plan's report of a model
// that does not fit); nil for ExitOK.
func Silent(code int) error {
	if code == ExitOK {
		return nil
	}
	return &Error{Code: code, Err: errSilent}
}

// Run runs app with args and returns the exit status, printing one line
// (Message) to the app's ErrWriter for a failure, with the status from table.
// It sets app.Version to Version when the app has none, accepts flags after
// arguments (Permute), and appends the table to the app's description. A write
// to a closed pipe (the next stage exited) ends quietly with status 0.
func Run(app *ucli.App, table Table, args []string) int {
	if app.ErrWriter == nil {
		app.ErrWriter = os.Stderr
	}
	if app.Writer == nil {
		app.Writer = os.Stdout
	}
	if app.Reader == nil {
		app.Reader = os.Stdin
	}
	if app.Version == "" {
		app.Version = Version
	}
	if len(table) > 0 && !strings.Contains(app.Description, "Exit status:") {
		app.Description = strings.TrimRight(app.Description, "\n") + "\n\n" + table.Help()
	}
	app.ExitErrHandler = func(*ucli.Context, error) {} // statuses are ours to decide
	if app.OnUsageError == nil {
		name := app.Name
		app.OnUsageError = func(_ *ucli.Context, err error, _ bool) error {
			return Usagef("%s (see %s --help)", longFlags(err.Error()), name)
		}
	}
	GrowPipe(os.Stdin, PipeSize)
	GrowPipe(os.Stdout, PipeSize)
	ctx, stop := signalContext(app.Name, app.ErrWriter)
	err := app.RunContext(ctx, Permute(app, args))
	if Interrupted() {
		select {} // the signal handler reports and ends the process
	}
	stop()
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, syscall.EPIPE) {
		return ExitOK
	}
	code := table.Code(err)
	if !errors.Is(err, errSilent) {
		fmt.Fprintln(app.ErrWriter, Message(app.Name, err))
	}
	return code
}

// longFlags turns urfave's "-name" in a flag error into "--name" for flags of
// more than one letter, as the help spells them.
func longFlags(msg string) string {
	words := strings.Fields(msg)
	for i, w := range words {
		if len(w) > 2 && w[0] == '-' && w[1] != '-' {
			words[i] = "-" + w
		}
	}
	return strings.Join(words, " ")
}

// Message is the one error line of the tool called name: "name: " once, then
// the message without the "name: " that the tool's own package puts on its
// sentinel errors ("place: interrupted", "verify: bad input"), wherever
// wrapping put it, and with any line breaks folded into "; ".
func Message(name string, err error) string {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	p := name + ": "
	for strings.HasPrefix(msg, p) {
		msg = msg[len(p):]
	}
	return p + dedupe(strings.ReplaceAll(msg, ": "+p, ": "))
}

// dedupe drops from a ": "-separated message every part that repeats an
// earlier one, as wrapping the same sentinel or name twice leaves them
// ("gpus: bad memory cap: \"0:abc\": gpus: bad memory size",
// "tensor \"x\": tensor \"x\": ...").
func dedupe(msg string) string {
	parts := strings.Split(msg, ": ")
	seen := make(map[string]bool, len(parts))
	out := parts[:0]
	for _, part := range parts {
		if seen[part] {
			continue
		}
		seen[part] = true
		out = append(out, part)
	}
	return strings.Join(out, ": ")
}

// PipeSize is the pipe buffer every tool asks for on a piped stdin or stdout.
// The kernel's default of 64 KiB makes a 4 MiB chunk cost 64 context switches
// between two stages; 1 MiB is the default pipe-max-size, the most an
// unprivileged process may ask for (docs/BENCHMARKS.md, "Pipe chain", has the
// figures).
const PipeSize = 1 << 20

// Main runs app with os.Args and exits with its status.
func Main(app *ucli.App, table Table) { os.Exit(Run(app, table, os.Args)) }

// OpenInput opens path for reading a stream; "" and "-" mean stdin (from
// app.Reader when set). An empty input, or one that starts with text, is
// refused here with a line that says so (see CheckStream).
func OpenInput(c *ucli.Context, path string) (io.ReadCloser, error) {
	what := path
	var r io.Reader
	var closer io.Closer = io.NopCloser(nil)
	if path == "" || path == "-" {
		what = "stdin"
		r = c.App.Reader
		if r == nil {
			r = os.Stdin
		}
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, WithCode(ExitInput, err)
		}
		r, closer = f, f
	}
	br := bufio.NewReaderSize(r, 1<<16)
	if err := CheckStream(br, what); err != nil {
		closer.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{br, closer}, nil
}

// CheckStream peeks at the start of a stream and refuses, with ExitInput and
// one clear line, an empty one (the stage before failed or wrote nothing) or
// one that starts with text (a report: --info, --report and --emit end a
// pipeline). A stream starts with binary magic and version bytes.
func CheckStream(br *bufio.Reader, what string) error {
	head, err := br.Peek(16)
	if len(head) == 0 {
		if err == io.EOF || err == nil {
			return WithCode(ExitInput, fmt.Errorf("no stream: %s is empty (the stage before wrote nothing; see its message)", what))
		}
		return WithCode(ExitInput, err)
	}
	for _, b := range head {
		if (b < 0x20 || b > 0x7e) && b != '\n' && b != '\r' && b != '\t' {
			return nil
		}
	}
	return WithCode(ExitInput, fmt.Errorf("not a tensor stream: %s starts with text %q; streams come from detect (--info, --report and --emit print a report instead and end a pipeline)", what, firstLine(head)))
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// Output is a file being written under a temporary name, renamed into place by
// Commit, so a failed or interrupted run leaves nothing under the final name
// and no temporary file; or stdout.
type Output struct {
	io.Writer
	f     *os.File
	final string
	dev   *os.File // a device or pipe written in place
	drop  func()   // forgets the temporary file in the interrupt cleanup
}

// CreateOutput opens path for writing; "" and "-" mean stdout (app.Writer when set).
func CreateOutput(c *ucli.Context, path string) (*Output, error) {
	if path == "" || path == "-" {
		w := c.App.Writer
		if w == nil {
			w = os.Stdout
		}
		return &Output{Writer: w}, nil
	}
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		// A device or a named pipe (-o /dev/null, -o /dev/stdout, a FIFO) is
		// written as it is: renaming a temporary file over it would replace it.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, WithCode(ExitOutput, err)
		}
		return &Output{Writer: f, dev: f}, nil
	}
	f, drop, err := createTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, WithCode(ExitOutput, fmt.Errorf("%s: %w", path, unwrapPath(err)))
	}
	// CreateTemp makes 0600; an output is an ordinary file, as > makes it.
	if err := f.Chmod(0o666 &^ umask()); err != nil {
		f.Close()
		os.Remove(f.Name())
		drop()
		return nil, WithCode(ExitOutput, fmt.Errorf("%s: %w", path, unwrapPath(err)))
	}
	return &Output{Writer: f, f: f, final: path, drop: drop}, nil
}

// unwrapPath drops the *fs.PathError around err, whose path is the temporary
// file's, so that the message names the user's path instead.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Commit syncs and renames a file output into place; for stdout a no-op, for a
// device or pipe a close.
func (o *Output) Commit() error {
	if o.dev != nil {
		err := o.dev.Close()
		o.dev = nil
		if err != nil {
			return WithCode(ExitOutput, err)
		}
		return nil
	}
	if o.f == nil {
		return nil
	}
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.f.Name(), o.final)
	}
	o.drop()
	if err != nil {
		os.Remove(o.f.Name())
		o.f = nil
		return WithCode(ExitOutput, fmt.Errorf("%s: %w", o.final, unwrapPath(err)))
	}
	o.f = nil
	return nil
}

// Abort removes a file output that was not committed; safe to defer.
func (o *Output) Abort() {
	if o.dev != nil {
		o.dev.Close()
		o.dev = nil
	}
	if o.f != nil {
		o.f.Close()
		os.Remove(o.f.Name())
		o.drop()
		o.f = nil
	}
}

// IsTerminal reports whether v, a reader or writer, is a terminal: so that
// progress is drawn only for a person, and a binary stream is neither written
// to nor awaited from one. /dev/null and other character devices are not
// terminals.
func IsTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && f != nil && term.IsTerminal(int(f.Fd()))
}

// IsPipe reports whether v, a writer, is a pipe or a socket: where a stream is
// passed on to a next stage. A regular file, a terminal or a device is not.
func IsPipe(v any) bool {
	f, ok := v.(*os.File)
	if !ok || f == nil {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&(os.ModeNamedPipe|os.ModeSocket) != 0
}
