// Package place is the logic of the place tool: it consumes a tensor stream and
// materializes the model, as a Hugging Face checkpoint directory in the
// bitsandbytes 4-bit layout (written atomically), on the planned GPUs, or
// both, passing the stream on so that verify can follow in the same pipe.
package place

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/progress"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// PlanFile is the side file that holds the stream's plan section.
const PlanFile = "nf4pipe_plan.json"

// Sentinel errors.
var (
	// ErrExists: the output directory exists and Force is off.
	ErrExists = errors.New("place: output directory exists")
	// ErrOutput: the output directory could not be written (permission, disk
	// full, file-size limit, ...); the system's error stays wrapped.
	ErrOutput = errors.New("place: cannot write the output directory")
	// ErrReplace: Force was given, and the output names something place must
	// not replace: a file or directory this tool did not write (and not
	// empty), the source model, or the working directory or one above it.
	ErrReplace = errors.New("place: refusing to replace")
	// ErrInterrupted: the context was cancelled (SIGINT, SIGTERM) before the end.
	ErrInterrupted = errors.New("place: interrupted")
	// ErrStream: a stream place cannot write: descriptors without payloads, or
	// 4-bit tensors whose quant type or double quantization differ (a
	// checkpoint's quantization_config holds one of each).
	ErrStream = errors.New("place: stream cannot be placed")
	// ErrNoCUDA: --gpu in a build without CUDA.
	ErrNoCUDA = errors.New("place: built without CUDA; rebuild with make cuda")
)

// Options say what Place does.
type Options struct {
	// Out is the checkpoint directory to write; "" writes none (GPU only).
	Out string
	// Force replaces an existing Out.
	Force bool
	// MaxShardSize is the shard size limit in bytes; 0 means 5 GB, as
	// transformers' save_pretrained.
	MaxShardSize int64
	// ComputeDType is bnb_4bit_compute_dtype ("bfloat16", "float16",
	// "float32"); "" takes the plan's compute dtype, else the source config's
	// dtype, else float32 (BitsAndBytesConfig's default).
	ComputeDType string
	// Emit receives the stream as it was consumed, with a stage record added;
	// nil emits nothing. A consumer that closes its end early (EPIPE) stops
	// the emission, not the placement.
	Emit io.Writer
	// Version and Args are recorded in the stage record: what ran.
	Version string
	Args    []string
	// GPU uploads every tensor to its planned device (CUDA builds only).
	GPU bool
	// Progress, when not nil, is told of every tensor and of the payload bytes
	// received, per read.
	Progress progress.Meter
}

// File is one file of the written checkpoint.
type File struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// Report says what Place did.
type Report struct {
	Dir       string   `json:"dir,omitempty"`
	Files     []File   `json:"files,omitempty"`
	Copied    []string `json:"copied,omitempty"` // files copied from the source directory
	Shards    int      `json:"shards"`
	Tensors   int      `json:"tensors"`   // stream tensors
	Quantized int      `json:"quantized"` // of which bnb4
	Entries   int      `json:"entries"`   // state-dict entries written
	Bytes     int64    `json:"bytes"`     // bytes of all files written
	Payload   int64    `json:"payload_bytes"`
	// InPlace is how many bytes of the entries went straight to their final
	// places in the files, as the stream's "tensors" announcement let them;
	// the others were spooled and copied at the end.
	InPlace    int64          `json:"in_place_bytes"`
	Seconds    float64        `json:"seconds"`
	Emitted    bool           `json:"emitted"`
	EmitClosed bool           `json:"emit_closed_early,omitempty"`
	Notes      []string       `json:"notes,omitempty"`
	GPU        []DeviceReport `json:"gpu,omitempty"`
}

// source is the part of detect's "source" header section place reads.

// job is one placement: its temporary directory, guarded so that a signal
// handler can abort it while the work goroutine runs.
type job struct {
	opt       Options
	out, tmp  string
	mu        sync.Mutex
	aborted   bool
	committed bool
	rep       Report
}

// Place reads a stream from in and does what opt says. On any failure, or when
// ctx is cancelled, opt.Out is left as it was (absent, or the old directory
// with Force) and the temporary directory is removed.
func Place(ctx context.Context, in io.Reader, opt Options) (*Report, error) {
	j := &job{opt: opt}
	if opt.Out == "" && !opt.GPU {
		return nil, fmt.Errorf("%w: nothing to do: neither an output directory nor GPU placement", ErrStream)
	}
	if opt.GPU {
		if err := gpuAvailable(); err != nil {
			return nil, err
		}
	}
	if opt.Out != "" {
		if err := j.prepare(); err != nil {
			return nil, j.outputError(err)
		}
	}
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := j.run(in)
		if err != nil {
			j.abort()
			err = j.outputError(err)
		}
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		return r.rep, r.err
	case <-ctx.Done():
		if j.abort() {
			return nil, fmt.Errorf("%w: %v; nothing written to %s", ErrInterrupted, context.Cause(ctx), opt.Out)
		}
		r := <-done // committed already: the work is finishing
		return r.rep, r.err
	}
}

// prepare checks the output path and makes the temporary directory beside it.
func (j *job) prepare() error {
	out, err := filepath.Abs(j.opt.Out)
	if err != nil {
		return err
	}
	j.out = out
	if _, err := os.Lstat(out); err == nil {
		if !j.opt.Force {
			return fmt.Errorf("%s: %w", out, ErrExists)
		}
		if err := replaceable(out); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return err
	}
	j.tmp = tmp
	// MkdirTemp makes the directory private; a checkpoint is shared like any
	// save_pretrained output.
	return os.Chmod(tmp, 0o755)
}

// abort removes the temporary directory unless the job has committed, and
// reports whether it did.
func (j *job) abort() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.committed {
		return false
	}
	j.aborted = true
	if j.tmp != "" {
		os.RemoveAll(j.tmp)
		os.RemoveAll(j.tmp) // once more, for a file a writer created meanwhile
	}
	return true
}

func (j *job) run(in io.Reader) (*Report, error) {
	start := time.Now()
	rep := &j.rep
	r := tensorstream.NewReader(in)
	h, err := r.Header()
	if err != nil {
		return nil, err
	}
	src, err := sections.GetSource(h)
	if err != nil {
		return nil, err
	}
	if src == nil {
		src = &sections.Source{}
	}
	if j.out != "" && src.Dir != "" {
		if err := notSource(j.out, src.Dir); err != nil {
			return nil, err
		}
	}
	em := newEmitter(j.opt.Emit)
	if em != nil {
		eh := *h
		eh.Stages = append(append([]tensorstream.Stage(nil), h.Stages...), j.stage())
		if err := em.header(&eh); err != nil {
			return nil, err
		}
	}
	var dw *checkpoint.DirWriter
	if j.tmp != "" {
		dw = checkpoint.NewDirWriter(j.tmp, j.opt.MaxShardSize, map[string]string{"format": "pt"})
		defer dw.Abort()
		if err := expect(dw, h); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("the stream's announcement of its tensors was not used (%v): every payload was spooled", err))
		}
	}
	var gp *gpuPlacer
	if j.opt.GPU {
		if gp, err = newGPUPlacer(h, em); err != nil {
			return nil, err
		}
		defer gp.close()
	}
	if j.opt.Progress != nil {
		// The tensors are detect's; their bytes, once quantized, are not known.
		facts, err := sections.GetModel(h)
		if err != nil {
			return nil, err
		}
		if facts != nil {
			j.opt.Progress.Expect(facts.Tensors, 0)
		}
	}
	var first *tensorstream.QuantState
	var params int64
	for {
		t, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if t.NoData {
			return nil, fmt.Errorf("tensor %q: %w: no payload (a stream from a config alone); run detect on the weights", t.Name, ErrStream)
		}
		n := t.NumElements()
		if t.Encoding == tensorstream.BNB4 {
			if first == nil {
				first = t.Quant
			} else if t.Quant.Type != first.Type || t.Quant.DoubleQuant != first.DoubleQuant {
				return nil, fmt.Errorf("tensor %q: %w: %s double_quant=%v after %s double_quant=%v", t.Name, ErrStream, t.Quant.Type, t.Quant.DoubleQuant, first.Type, first.DoubleQuant)
			}
			rep.Quantized++
			params += (n + 1) / 2 * 2 // num_parameters() of a Params4bit: packed numel × 2
		} else {
			params += n
		}
		rep.Tensors++
		rep.Payload += t.Size
		if j.isAborted() {
			return nil, ErrInterrupted
		}
		progress.Or(j.opt.Progress).Tensor(t.Name)
		payload := progress.Reader(j.opt.Progress, r)
		if em != nil && gp == nil {
			if err := em.tensor(t); err != nil {
				return nil, err
			}
			payload = io.TeeReader(payload, em)
		}
		if gp != nil {
			if payload, err = gp.place(t, payload); err != nil {
				return nil, err
			}
		}
		if dw != nil {
			entries, err := checkpoint.Entries(t)
			if err != nil {
				return nil, err
			}
			rep.Entries += len(entries)
			in := &inputReader{r: payload}
			if err := checkpoint.WriteTensor(dw, t, in); err != nil {
				if in.err != nil {
					// The stream's own error, not the writer's account of it,
					// which names the shard's temporary file.
					return nil, in.err
				}
				return nil, err
			}
		} else if _, err := io.Copy(io.Discard, payload); err != nil {
			return nil, err
		}
	}
	if rep.Quantized == 0 && rep.Tensors > 0 && !ranStage(h, "quantize") {
		return nil, fmt.Errorf("%w: no 4-bit tensor and no quantize stage: the stream was not quantized (put quantize before place)", ErrStream)
	}
	if gp != nil {
		if err := gp.finish(rep); err != nil {
			return nil, err
		}
	}
	if dw != nil {
		if err := j.finishDir(dw, src, h, first, params); err != nil {
			return nil, err
		}
		if err := j.commit(); err != nil {
			return nil, err
		}
		rep.Dir = j.out
	}
	if em != nil {
		if err := em.close(); err != nil {
			return nil, err
		}
		rep.Emitted, rep.EmitClosed = !em.closedEarly, em.closedEarly
		if em.closedEarly {
			rep.Notes = append(rep.Notes, "the stream's reader closed its end early; emission stopped, placement went on")
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// expect tells dw the entries the stream's "tensors" section announces, if
// it has one. An announcement is never trusted for content, so one that
// cannot be used only costs speed.
func expect(dw *checkpoint.DirWriter, h *tensorstream.Header) error {
	ann, err := sections.GetTensors(h)
	if err != nil || ann == nil {
		return err
	}
	return dw.ExpectTensors(ann.Tensors)
}

func (j *job) isAborted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.aborted
}

// finishDir closes the safetensors files and writes config.json, the copied
// source files and the plan side file into the temporary directory.
func (j *job) finishDir(dw *checkpoint.DirWriter, src *sections.Source, h *tensorstream.Header, q *tensorstream.QuantState, params int64) error {
	files, err := dw.Close(params)
	j.rep.InPlace = dw.InPlaceBytes()
	if err != nil {
		return err
	}
	j.rep.Shards = len(files)
	if len(files) > 1 {
		j.rep.Shards-- // the index
	}
	if len(src.Config) > 0 {
		cfg := src.Config
		if q != nil {
			compute, err := j.computeDType(h, src.Config)
			if err != nil {
				return err
			}
			qc := checkpoint.QuantizationConfig{QuantType: q.Type, DoubleQuant: q.DoubleQuant, ComputeDType: compute}
			if cfg, err = checkpoint.WithQuantizationConfig(src.Config, qc); err != nil {
				return fmt.Errorf("source config.json: %w", err)
			}
		}
		if err := checkpoint.WriteFileSync(filepath.Join(j.tmp, "config.json"), cfg); err != nil {
			return err
		}
	} else {
		j.rep.Notes = append(j.rep.Notes, "the source has no config.json: the checkpoint holds the tensors alone")
	}
	copied, err := copySourceFiles(src.Dir, j.tmp, j.out)
	if err != nil {
		return err
	}
	j.rep.Copied = copied
	stages := append(append([]tensorstream.Stage(nil), h.Stages...), j.stage())
	if err := writePlan(h, stages, filepath.Join(j.tmp, PlanFile), j.opt.Version); err != nil {
		return err
	}
	ents, err := os.ReadDir(j.tmp)
	if err != nil {
		return err
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(j.tmp, e.Name()), 0o644); err != nil { // temporary files are created 0600
			return err
		}
		j.rep.Files = append(j.rep.Files, File{Name: e.Name(), Bytes: info.Size()})
		j.rep.Bytes += info.Size()
	}
	return syncDir(j.tmp)
}

// commit renames the temporary directory to Out; with Force an existing Out
// is renamed away first and removed after.
func (j *job) commit() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.aborted {
		return ErrInterrupted
	}
	parent := filepath.Dir(j.out)
	var old string
	if _, err := os.Lstat(j.out); err == nil {
		if !j.opt.Force {
			return fmt.Errorf("%s: %w (it appeared while placing)", j.out, ErrExists)
		}
		if err := replaceable(j.out); err != nil {
			return err
		}
		old = filepath.Join(parent, "."+filepath.Base(j.out)+".old-"+filepath.Base(j.tmp))
		if err := os.Rename(j.out, old); err != nil {
			return err
		}
	}
	if err := os.Rename(j.tmp, j.out); err != nil {
		if old != "" {
			os.Rename(old, j.out)
		}
		return err
	}
	j.committed = true
	syncDir(parent)
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			j.rep.Notes = append(j.rep.Notes, fmt.Sprintf("could not remove the replaced directory %s: %v", old, err))
		}
	}
	return nil
}

// outputError turns a failure to write the output directory, or the
// temporary and replaced directories beside it, into "writing OUT: what went
// wrong": the temporary names mean nothing to the user. The cause (ENOSPC,
// EFBIG, ...) stays wrapped, and with it the exit status.
func (j *job) outputError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && j.ours(pe.Path) {
		return fmt.Errorf("%w %s: %w", ErrOutput, j.out, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) && (j.ours(le.Old) || j.ours(le.New)) {
		return fmt.Errorf("%w %s: %w", ErrOutput, j.out, le.Err)
	}
	return err
}

// ours reports whether path is the output directory or lies in one of the
// directories place makes beside it (".OUT.tmp-*", ".OUT.old-*").
func (j *job) ours(path string) bool {
	if j.out == "" {
		return false
	}
	if path == j.out {
		return true
	}
	rel, err := filepath.Rel(filepath.Dir(j.out), path)
	return err == nil && strings.HasPrefix(rel, "."+filepath.Base(j.out)+".")
}

// inputReader remembers the first error reading a payload (from the stream, or
// from the pass-through tee).
type inputReader struct {
	r   io.Reader
	err error
}

func (r *inputReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// emitter writes the pass-through stream; a reader that went away (EPIPE)
// turns it off instead of failing the placement.
type emitter struct {
	w           *tensorstream.Writer
	closedEarly bool
}

func newEmitter(w io.Writer) *emitter {
	if w == nil {
		return nil
	}
	return &emitter{w: tensorstream.NewWriter(w)}
}

func (e *emitter) check(err error) error {
	if err != nil && errors.Is(err, syscall.EPIPE) {
		e.closedEarly = true
		return nil
	}
	return err
}

func (e *emitter) header(h *tensorstream.Header) error { return e.check(e.w.WriteHeader(h)) }

func (e *emitter) tensor(t *tensorstream.Tensor) error {
	if e.closedEarly {
		return nil
	}
	return e.check(e.w.WriteTensor(t))
}

// Write is the emitter's side of the payload tee.
func (e *emitter) Write(p []byte) (int, error) {
	if !e.closedEarly {
		if _, err := e.w.Write(p); e.check(err) != nil {
			return 0, fmt.Errorf("pass-through stream: %w", err)
		}
	}
	return len(p), nil
}

func (e *emitter) close() error {
	if e.closedEarly {
		return nil
	}
	return e.check(e.w.Close())
}

// computeDType picks bnb_4bit_compute_dtype: the option, the plan's compute
// dtype, the source config's dtype, float32.
func (j *job) computeDType(h *tensorstream.Header, config []byte) (string, error) {
	if j.opt.ComputeDType != "" {
		return torchDType(j.opt.ComputeDType), nil
	}
	p, err := sections.GetPlan(h)
	if err != nil {
		return "", err
	}
	if p != nil {
		if d := torchDType(p.ComputeDType.Value); d != "" {
			return d, nil
		}
	}
	if d := configDType(config); d != "" {
		return d, nil
	}
	return "float32", nil
}

// ranStage reports whether the stream's header records a stage called name.
func ranStage(h *tensorstream.Header, name string) bool {
	for _, st := range h.Stages {
		if st.Name == name {
			return true
		}
	}
	return false
}

// stage is place's own stage record.
func (j *job) stage() tensorstream.Stage {
	return tensorstream.Stage{Name: "place", Version: j.opt.Version, Args: j.opt.Args}
}
