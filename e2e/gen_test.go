package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nf4pipe/nf4pipe/internal/synth"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

// generate writes into dir the inputs too big, or too dependent on the current
// stream format, to keep in testdata/bad/; the cases name them as {gen}/NAME.
//
//	llama.stream            detect testdata/models/llama
//	llama-nf4.stream        the same through quantize
//	*.truncated             the first half of a stream
//	*.corrupt               one payload bit flipped half-way through
//	*.v2                    the major format version byte set to 2
//	llama-nan, llama-inf    the llama model with one NaN (+Inf) in a weight that is quantized,
//	                        and their streams llama-nan.stream, llama-inf.stream
//	header-over-100MB.safetensors  a header length of 100000001 in a sparse file long enough to hold it
//	big.stream, big-nf4.stream  a synthetic llama of 17 MB and its 4-bit stream: every stage's
//	                        output is larger than a pipe's buffer (cli.PipeSize, 1 MiB), so a
//	                        reader that closes early always ends the writer by SIGPIPE (the tiny
//	                        llama's 0.7 MB of 4-bit output could fit, and the writer finish first)
func generate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	model := path("testdata", "models", "llama")
	raw, nf4 := filepath.Join(dir, "llama.stream"), filepath.Join(dir, "llama-nf4.stream")
	if err := tool("detect", "", raw, "-q", model); err != nil {
		return err
	}
	if err := tool("quantize", raw, nf4, "-q"); err != nil {
		return err
	}
	for _, s := range []string{raw, nf4} {
		b, err := os.ReadFile(s)
		if err != nil {
			return err
		}
		if err := os.WriteFile(s+".truncated", b[:len(b)/2], 0o644); err != nil {
			return err
		}
		c := append([]byte(nil), b...)
		c[len(c)/2] ^= 0x40
		if err := os.WriteFile(s+".corrupt", c, 0o644); err != nil {
			return err
		}
		v := append([]byte(nil), b...)
		v[4] = 2 // the major version follows the 4-byte magic
		if err := os.WriteFile(s+".v2", v, 0o644); err != nil {
			return err
		}
	}
	for name, v := range map[string]float64{"llama-nan": math.NaN(), "llama-inf": math.Inf(1)} {
		if err := poisonedModel(model, filepath.Join(dir, name), "model.layers.1.mlp.up_proj.weight", 100, v); err != nil {
			return err
		}
		if err := tool("detect", "", filepath.Join(dir, name+".stream"), "-q", filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if err := bigStreams(dir); err != nil {
		return err
	}
	return sparseHeader(filepath.Join(dir, "header-over-100MB.safetensors"), 100_000_001)
}

// bigStreams writes big.stream and big-nf4.stream (see generate).
func bigStreams(dir string) error {
	d := synth.Dims{Hidden: 512, Intermediate: 1408, Layers: 2, Heads: 8, KVHeads: 4, Vocab: 4096,
		MaxPosition: 256, RopeTheta: 10000, BOS: 1, EOS: 2}
	cfg, err := d.ConfigJSON()
	if err != nil {
		return err
	}
	model := filepath.Join(dir, "big")
	if _, err := synth.WriteModel(model, synth.Options{Config: cfg, Seed: 1}); err != nil {
		return err
	}
	raw, nf4 := filepath.Join(dir, "big.stream"), filepath.Join(dir, "big-nf4.stream")
	if err := tool("detect", "", raw, "-q", model); err != nil {
		return err
	}
	return tool("quantize", raw, nf4, "-q")
}

// tool runs a built tool with stdin from in ("" for none) and stdout into out.
func tool(name, in, out string, args ...string) error {
	cmd := exec.Command(filepath.Join(bin, name), args...)
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd.Stdout = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return nil
}

// poisonedModel copies the model directory src to dst with element i of the
// BF16 tensor name set to v.
func poisonedModel(src, dst, name string, i int64, v float64) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"config.json", "generation_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			return err
		}
	}
	path := filepath.Join(src, "model.safetensors")
	sf, err := safetensors.OpenFile(path)
	if err != nil {
		return err
	}
	info, ok := sf.Tensor(name)
	sf.Close()
	if !ok || info.DType != safetensors.BF16 {
		return fmt.Errorf("%s: tensor %s is not BF16", src, name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	at := info.Offset + 2*i
	binary.LittleEndian.PutUint16(b[at:], uint16(math.Float32bits(float32(v))>>16))
	return os.WriteFile(filepath.Join(dst, "model.safetensors"), b, 0o644)
}

// sparseHeader writes a safetensors file whose header length is n, followed
// by n bytes of hole, so the length does not run past the end of the file and
// only the size limit can refuse it.
func sparseHeader(name string, n int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(n))
	_, err = f.Write(l[:])
	if err == nil {
		_, err = f.Seek(n, io.SeekCurrent)
	}
	if err == nil {
		_, err = f.Write([]byte("}"))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
