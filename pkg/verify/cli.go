package verify

import (
	"bufio"
	"errors"
	"io"
	"os"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
)

// ExitCode maps an error from Run, Report.Err or the listing functions to the
// exit status that internal/cli documents for every tool: 0 all well,
// 6 (cli.ExitIntegrity) an integrity failure, 7 (cli.ExitQuality) tensors
// outside the envelope, 3 (cli.ExitInput) input that cannot be verified.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.Is(err, ErrIntegrity):
		return cli.ExitIntegrity
	case errors.Is(err, ErrQuality):
		return cli.ExitQuality
	case errors.Is(err, ErrInput):
		return cli.ExitInput
	}
	return cli.Code(err)
}

// App returns the verify command. Set Reader, Writer and ErrWriter to run it
// in-process; cli.Run(app, args) returns its exit status.
func App() *ucli.App {
	return &ucli.App{
		Name:      "verify",
		Usage:     "check a 4-bit stream or checkpoint against its source model: error, integrity, round trip",
		UsageText: "verify [--reference MODEL] [--checkpoint DIR] [-i STREAM] [--json | -q]\n   verify --list [-i STREAM | --checkpoint DIR] [--json]",
		Version:   cli.Version,
		Description: "Reads a tensor stream from stdin (or -i FILE) and/or a bitsandbytes 4-bit checkpoint\n" +
			"(--checkpoint), dequantizes every 4-bit tensor and compares it with --reference: relative\n" +
			"error, RMSE, max error, SQNR, cosine; flags tensors above the error envelope of their quant\n" +
			"type and block size; checks checksums, shapes, dtypes, quant state, that every reference\n" +
			"tensor is there and kept tensors are byte-identical (or, after quantize --cast, identical\n" +
			"to the reference cast the same way). With --checkpoint and a stream on stdin, also checks\n" +
			"that the checkpoint reads back to exactly the stream.\n\n" +
			"Exit status: 0 all well, 2 usage, 3 unreadable input, 6 integrity failure,\n" +
			"7 tensors outside the error envelope (worth keeping in 16 bits).\n\n" +
			"Examples:\n" +
			"   verify --checkpoint llama-bnb-nf4 --reference llama          # anyone's checkpoint\n" +
			"   detect M | quantize | place --out M-nf4 | verify --checkpoint M-nf4 --reference M\n" +
			"   quantize -i m.stream | verify --reference M --json\n" +
			"   verify --list -i m.stream",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "reference", Aliases: []string{"r"}, Usage: "the original model: `DIR`, .safetensors file, index JSON, or an ORG/NAME id in the local Hugging Face cache"},
			&ucli.StringFlag{Name: "revision", Usage: "with a --reference id: the branch, tag or commit `REV` in the Hugging Face cache (default main)"},
			&ucli.StringFlag{Name: "checkpoint", Aliases: []string{"c"}, Usage: "a bitsandbytes 4-bit checkpoint `DIR` (or an ORG/NAME id in the local Hugging Face cache) to verify"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` (- for stdin); default stdin unless it is a terminal or empty"},
			&ucli.BoolFlag{Name: "list", Usage: "print the header and tensor table and check nothing"},
			&ucli.BoolFlag{Name: "json", Usage: "write the report as JSON"},
			&ucli.Float64Flag{Name: "tolerance", Value: DefaultTolerance, Usage: "flag 4-bit tensors whose error exceeds `F` times the Gaussian error of their quant type and block size"},
			&ucli.StringFlag{Name: "spool-dir", Usage: "temporary `DIR` for stream payloads over 64 MiB (default $TMPDIR)"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no report and no progress line: only the exit status, and one line on stderr for a failure"},
		},
		HideHelpCommand: true,
		Action:          action,
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return cli.Usagef("%v (see verify --help)", err)
		},
	}
}

func action(c *ucli.Context) error {
	if c.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (inputs go in -i, --checkpoint and --reference)", c.Args().First())
	}
	if c.Float64("tolerance") <= 0 {
		return cli.Usagef("--tolerance must be positive")
	}
	stream, closeStream, err := openStream(c)
	if err != nil {
		return err
	}
	defer closeStream()
	out := c.App.Writer
	if c.Bool("list") {
		var l *Listing
		switch {
		case stream != nil:
			l, err = ListStream(stream)
		case c.String("checkpoint") != "":
			l, err = ListCheckpoint(c.String("checkpoint"))
		default:
			return cli.Usagef("--list needs a stream (stdin or -i) or --checkpoint")
		}
		if err != nil {
			return cli.WithCode(ExitCode(err), err)
		}
		if c.Bool("json") {
			return l.WriteJSON(out)
		}
		return l.WriteTable(out)
	}
	if stream == nil && c.String("checkpoint") == "" {
		return cli.Usagef("nothing to verify: pipe a stream in, give -i FILE or --checkpoint DIR")
	}
	var prog *cli.Progress
	if !c.Bool("quiet") && c.String("reference") != "" {
		prog = cli.NewProgress(c.App.ErrWriter, "verify", 0)
	}
	rep, err := Run(Options{Stream: stream, Checkpoint: c.String("checkpoint"), Reference: c.String("reference"), ReferenceRevision: c.String("revision"),
		Tolerance: c.Float64("tolerance"), SpoolDir: c.String("spool-dir"), Progress: prog})
	prog.Done()
	if err != nil {
		return cli.WithCode(ExitCode(err), err)
	}
	switch {
	case c.Bool("quiet"):
	case c.Bool("json"):
		err = rep.WriteJSON(out)
	default:
		err = rep.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if err := rep.Err(); err != nil {
		return cli.WithCode(ExitCode(err), err)
	}
	return nil
}

// openStream returns the stream to read, or nil when there is none: -i names
// one; else stdin, unless it is a terminal or empty (so that
// `verify --checkpoint DIR` run from a shell or with </dev/null reads no stream).
func openStream(c *ucli.Context) (io.Reader, func(), error) {
	path := c.String("input")
	if path != "" && path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, cli.WithCode(cli.ExitInput, err)
		}
		return f, func() { f.Close() }, nil
	}
	in := c.App.Reader
	if in == nil {
		in = os.Stdin
	}
	if path == "" && cli.IsTerminal(in) {
		return nil, func() {}, nil
	}
	br := bufio.NewReader(in)
	if _, err := br.Peek(1); err == io.EOF && path == "" {
		return nil, func() {}, nil
	}
	return br, func() {}, nil
}
