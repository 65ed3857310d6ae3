// Package cli holds what every nf4pipe command shares: the exit statuses, the one
// place that maps errors to them, the version, and input/output opening.
package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// Version is the version every tool reports; the Makefile may override it with
// -ldflags "-X github.com/nf4pipe/nf4pipe/internal/cli.Version=...".
var Version = "0.1.0-dev"

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

// inputErrors are sentinels that mean the input is at fault.
var inputErrors = []error{
	tensorstream.ErrCorrupt, tensorstream.ErrChecksum, tensorstream.ErrVersion,
	tensorstream.ErrLimit, io.ErrUnexpectedEOF,
	safetensors.ErrHeader, safetensors.ErrTruncated, safetensors.ErrDType, safetensors.ErrShape,
	safetensors.ErrOffsets, safetensors.ErrDuplicate, safetensors.ErrMissingShard, safetensors.ErrIndex,
	safetensors.ErrNotFound, safetensors.ErrSize,
	arch.ErrConfig, arch.ErrShape,
	quant.ErrNonFinite, quant.ErrDType, quant.ErrLength,
	hfcache.ErrNotCached,
}

// usageErrors are sentinels that mean a flag or argument is at fault.
var usageErrors = []error{
	arch.ErrPattern, quant.ErrParams, gpus.ErrSpec, gpus.ErrSize, gpus.ErrMaxMem,
	hfcache.ErrRevision,
}

// RegisterInputErrors adds sentinels of other packages that mean bad input.
func RegisterInputErrors(errs ...error) { inputErrors = append(inputErrors, errs...) }

// RegisterUsageErrors adds sentinels of other packages that mean a bad flag or
// argument.
func RegisterUsageErrors(errs ...error) { usageErrors = append(usageErrors, errs...) }

// Code maps an error to an exit status.
func Code(err error) int {
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
	for _, s := range usageErrors {
		if errors.Is(err, s) {
			return ExitUsage
		}
	}
	for _, s := range inputErrors {
		if errors.Is(err, s) {
			return ExitInput
		}
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) {
		return ExitOutput
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return ExitInput
	}
	return ExitFailure
}

// errSilent marks a failure that the command has reported itself.
var errSilent = errors.New("exit status already reported")

// Status returns an error that makes Run exit with code and print nothing, for
// a command that has reported the outcome itself (plan's report of a model
// that does not fit); nil for ExitOK.
func Status(code int) error {
	if code == ExitOK {
		return nil
	}
	return &Error{Code: code, Err: errSilent}
}

// Run runs app with args and returns the exit status, printing one line
// (Message) to the app's ErrWriter for a failure. It sets app.Version to
// Version when the app has none. A write to a closed pipe (the next stage
// exited) ends quietly with status 0; where SIGPIPE is not ignored, the Go
// runtime ends the process by SIGPIPE before that, as quietly.
func Run(app *ucli.App, args []string) int {
	if app.ErrWriter == nil {
		app.ErrWriter = os.Stderr
	}
	if app.Version == "" {
		app.Version = Version
	}
	app.ExitErrHandler = func(*ucli.Context, error) {} // statuses are ours to decide
	GrowPipe(os.Stdin, PipeSize)
	GrowPipe(os.Stdout, PipeSize)
	err := app.Run(args)
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, syscall.EPIPE) {
		return ExitOK
	}
	code := Code(err)
	if !errors.Is(err, errSilent) {
		fmt.Fprintln(app.ErrWriter, Message(app.Name, err))
	}
	return code
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
	return p + strings.ReplaceAll(msg, ": "+p, ": ")
}

// PipeSize is the pipe buffer every tool asks for on a piped stdin or stdout.
// The kernel's default of 64 KiB makes a 4 MiB chunk cost 64 context switches
// between two stages; 1 MiB (the default pipe-max-size) made a two-process pipe
// 2.3 GB/s instead of 0.5 GB/s on the 2-core development VM.
const PipeSize = 1 << 20

// Main runs app with os.Args and exits with its status.
func Main(app *ucli.App) { os.Exit(Run(app, os.Args)) }

// OpenInput opens path for reading; "" and "-" mean stdin (from app.Reader when set).
func OpenInput(c *ucli.Context, path string) (io.ReadCloser, error) {
	if path == "" || path == "-" {
		r := c.App.Reader
		if r == nil {
			r = os.Stdin
		}
		return io.NopCloser(r), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, WithCode(ExitInput, err)
	}
	return f, nil
}

// Output is a file being written under a temporary name, renamed into place by
// Commit, so a failed run leaves nothing under the final name; or stdout.
type Output struct {
	io.Writer
	f     *os.File
	final string
	dev   *os.File // a device or pipe written in place
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
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, WithCode(ExitOutput, err)
	}
	return &Output{Writer: f, f: f, final: path}, nil
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
	if err != nil {
		os.Remove(o.f.Name())
		return WithCode(ExitOutput, err)
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
