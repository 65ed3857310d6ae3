package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/nf4pipe/nf4pipe/pkg/verify"
)

func main() { cli.Main(newApp(), exitTable) }

// exitTable maps verify's errors to its exit statuses.
var exitTable = cli.Table{
	{Code: cli.ExitOK, Meaning: "all well"},
	{Code: cli.ExitUsage, Meaning: "bad flags or arguments", Errs: []error{hfcache.ErrRevision}},
	{Code: cli.ExitInput, Meaning: "input that cannot be verified: unreadable, empty, or with no 4-bit tensor", Errs: []error{verify.ErrInput,
		tensorstream.ErrCorrupt, tensorstream.ErrVersion, tensorstream.ErrLimit, tensorstream.ErrSize,
		safetensors.ErrHeader, safetensors.ErrTruncated, safetensors.ErrNotFound, safetensors.ErrIndex, safetensors.ErrMissingShard,
		checkpoint.ErrConfig, hfcache.ErrNotCached}},
	{Code: cli.ExitOutput, Meaning: "the report could not be written"},
	{Code: cli.ExitIntegrity, Meaning: "integrity failure (checksums, shapes, quant state, a stream that did not end)", Errs: []error{verify.ErrIntegrity}},
	{Code: cli.ExitQuality, Meaning: "tensors outside the error envelope (worth keeping in 16 bits)", Errs: []error{verify.ErrQuality}},
}

// newApp returns the verify command. Set Reader, Writer and ErrWriter to run
// it in-process; cli.Run(app, exitTable, args) returns its exit status.
func newApp() *ucli.App {
	return &ucli.App{
		Name:      "verify",
		Usage:     "check a 4-bit stream or checkpoint against its source model: error, integrity, round trip",
		UsageText: "verify [--reference MODEL] [--checkpoint DIR] [-i STREAM] [--json | -q]\n   verify --list [-i STREAM | --checkpoint DIR] [--json]",
		Description: "Reads a tensor stream from stdin (or -i FILE) and/or a bitsandbytes 4-bit checkpoint\n" +
			"(--checkpoint), dequantizes every 4-bit tensor and compares it with --reference: relative\n" +
			"error, RMSE, max error, SQNR, cosine; flags tensors above the error envelope of their quant\n" +
			"type and block size; checks checksums, shapes, dtypes, quant state, that every reference\n" +
			"tensor is there and kept tensors are byte-identical (or, after quantize --cast, identical\n" +
			"to the reference cast the same way). With --checkpoint and a stream on stdin, also checks\n" +
			"that the checkpoint reads back to exactly the stream; the checkpoint is read only\n" +
			"after the stream's end record, which place sends once the checkpoint is complete.\n" +
			"An empty stream on a pipe is an error (the stage before failed).\n\n" +
			"Examples:\n" +
			"   verify --checkpoint testdata/models/llama-bnb-nf4 --reference testdata/models/llama   # anyone's checkpoint\n" +
			"   detect testdata/models/llama | quantize | place --out llama-nf4 | verify --checkpoint llama-nf4 --reference testdata/models/llama\n" +
			"   quantize -i llama.stream | verify --reference testdata/models/llama --json\n" +
			"   verify --list -i llama.stream",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "reference", Aliases: []string{"r"}, Usage: "the original model: `MODEL` (directory, a .safetensors file, an index JSON, or an ORG/NAME id in the local Hugging Face cache)"},
			&ucli.StringFlag{Name: "revision", Usage: "with a --reference id: the branch, tag or commit `REV` in the Hugging Face cache (default main)"},
			&ucli.StringFlag{Name: "checkpoint", Aliases: []string{"c"}, Usage: "a bitsandbytes 4-bit checkpoint `DIR` (or an ORG/NAME id in the local Hugging Face cache) to verify"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` (- for stdin); default stdin, unless it is a terminal or /dev/null (an empty pipe is an error)"},
			&ucli.BoolFlag{Name: "list", Usage: "print the header and tensor table and check nothing"},
			&ucli.BoolFlag{Name: "json", Usage: "the report as JSON, on stdout"},
			&ucli.Float64Flag{Name: "tolerance", Value: verify.DefaultTolerance, Usage: "flag 4-bit tensors whose error exceeds `F` times the Gaussian error of their quant type and block size"},
			&ucli.StringFlag{Name: "spool-dir", Usage: "temporary `DIR` for stream payloads over 64 MiB, and with --checkpoint for the whole stream until its end (default $TMPDIR)"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no text report and no progress line: only the exit status, and one line on stderr for a failure (--json still writes the JSON report)"},
		},
		HideHelpCommand: true,
		Action:          action,
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
		var l *verify.Listing
		switch {
		case stream != nil:
			l, err = verify.ListStream(stream)
		case c.String("checkpoint") != "":
			l, err = verify.ListCheckpoint(c.String("checkpoint"))
		default:
			return cli.Usagef("--list needs a stream (stdin or -i) or --checkpoint")
		}
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return l.WriteJSON(out)
		}
		return l.WriteTable(out)
	}
	if stream == nil && c.String("checkpoint") == "" {
		return cli.Usagef("nothing to verify: pipe a stream in, give -i FILE or --checkpoint DIR")
	}
	opt := verify.Options{Stream: stream, Checkpoint: c.String("checkpoint"), Reference: c.String("reference"), ReferenceRevision: c.String("revision"),
		Tolerance: c.Float64("tolerance"), SpoolDir: c.String("spool-dir")}
	if !c.Bool("quiet") && c.String("reference") != "" {
		if p := cli.NewProgress(c.App.ErrWriter, "verify", 0); p != nil {
			opt.Progress = p
			defer p.Done()
		}
	}
	rep, err := verify.Run(opt)
	if err != nil {
		return err
	}
	if rep.Err() == nil && rep.Totals.Tensors > 0 && rep.Totals.Quantized == 0 {
		what := "the stream"
		if c.String("checkpoint") != "" {
			what = c.String("checkpoint")
		}
		return cli.WithCode(cli.ExitInput, fmt.Errorf("%s holds no 4-bit tensor: it is not quantized (put quantize in the pipeline: detect MODEL | quantize | place --out DIR)", what))
	}
	switch {
	case c.Bool("json"):
		err = rep.WriteJSON(out)
	case c.Bool("quiet"):
	default:
		err = rep.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if err := rep.Err(); err != nil {
		return err
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
		br := bufio.NewReader(f)
		if err := cli.CheckStream(br, path); err != nil {
			f.Close()
			return nil, nil, err
		}
		return br, func() { f.Close() }, nil
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
		if cli.IsPipe(in) {
			// A pipeline whose stage before verify wrote nothing has failed:
			// verifying a checkpoint left from an earlier run would say OK
			// about output this run did not make.
			return nil, nil, cli.WithCode(cli.ExitInput, errors.New("no stream on stdin: the stage before verify wrote nothing (see its message); to verify a checkpoint alone, run verify without a pipe or with </dev/null"))
		}
		return nil, func() {}, nil
	}
	if err := cli.CheckStream(br, "stdin"); err != nil {
		return nil, nil, err
	}
	return br, func() {}, nil
}
