package place

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// maxCopySize bounds a file copied from the source directory: tokenizers are
// tens of MB at most; anything bigger is weights or data.
const maxCopySize = 256 << 20

// skipCopy reports whether a file of the source directory stays behind:
// weights (place writes its own), config.json (rewritten), hidden files and
// what place itself writes.
func skipCopy(name string) bool {
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(name, "."), name == "config.json", name == PlanFile:
		return true
	case strings.HasSuffix(lower, ".safetensors"), strings.HasSuffix(lower, ".safetensors.index.json"):
		return true
	}
	for _, ext := range []string{".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".onnx_data", ".pkl", ".npz", ".ot", ".tflite"} {
		if strings.HasSuffix(lower, ext) {
			return true
		}
	}
	return false
}

// copySourceFiles copies the small regular files of dir (generation_config.json,
// tokenizer files, chat templates, README, ...) into dst, fsynced. A dir that
// is empty, missing or the output itself copies nothing.
func copySourceFiles(dir, dst, out string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	if a, err := filepath.Abs(dir); err == nil && a == out {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil // the stream came from elsewhere; nothing to copy
	}
	var copied []string
	for _, e := range ents {
		if skipCopy(e.Name()) {
			continue
		}
		// A snapshot of the Hugging Face cache holds symlinks into its blobs:
		// follow them, and copy what they point to when it is a regular file.
		info, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || !info.Mode().IsRegular() || info.Size() > maxCopySize {
			continue
		}
		if err := copyFile(filepath.Join(dir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return nil, err
		}
		copied = append(copied, e.Name())
	}
	return copied, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.LimitReader(in, maxCopySize))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s: %w", from, err)
	}
	return nil
}

// PlanSide is the content of the plan side file, which every checkpoint place
// writes: WrittenBy marks the directory as this tool's, the one kind of
// directory that place --force replaces.
type PlanSide struct {
	WrittenBy string               `json:"written_by"`
	Stages    []tensorstream.Stage `json:"stages"`
	Plan      any                  `json:"plan"`
}

// WrittenBy is the mark of PlanSide.WrittenBy, followed by the version.
const WrittenBy = "nf4pipe place"

// writePlan writes the side file: the mark, the stages that made the
// checkpoint (place's own last) and the header's plan section (null when
// there is none), as JSON.
func writePlan(h *tensorstream.Header, stages []tensorstream.Stage, path, version string) error {
	var plan any
	if _, err := h.Get(tensorstream.SectionPlan, &plan); err != nil {
		return err
	}
	data, err := json.MarshalIndent(PlanSide{WrittenBy: strings.TrimSpace(WrittenBy + " " + version), Stages: stages, Plan: tensorstream.JSONValue(plan)}, "", "  ")
	if err != nil {
		return fmt.Errorf("header section %q: %w", tensorstream.SectionPlan, err)
	}
	return checkpoint.WriteFileSync(path, append(data, '\n'))
}

// torchDType turns a dtype name (bf16, bfloat16, BF16, fp16, float16, half,
// fp32, float32, float) into the torch name, or "".
func torchDType(s string) string {
	switch strings.ToLower(strings.TrimPrefix(s, "torch.")) {
	case "bf16", "bfloat16":
		return "bfloat16"
	case "fp16", "f16", "float16", "half":
		return "float16"
	case "fp32", "f32", "float32", "float":
		return "float32"
	}
	return ""
}

// configDType returns the torch name of config.json's dtype (or torch_dtype).
func configDType(config []byte) string {
	var c struct {
		DType      string `json:"dtype"`
		TorchDType string `json:"torch_dtype"`
	}
	if json.Unmarshal(config, &c) != nil {
		return ""
	}
	if d := torchDType(c.DType); d != "" {
		return d
	}
	return torchDType(c.TorchDType)
}

// TorchDType is the torch name of a dtype name (bf16, bfloat16, fp16, half,
// f32, ...), "" for one it does not know.
func TorchDType(s string) string { return torchDType(s) }

// replaceable reports, as an error wrapping ErrReplace, why the existing path
// out must not be replaced: only an empty directory, or a checkpoint
// directory whose side file carries WrittenBy, may be; never the working
// directory or one above it.
func replaceable(out string) error {
	if cwd, err := os.Getwd(); err == nil && within(cwd, out) {
		return fmt.Errorf("%s: %w: it is the working directory or holds it", out, ErrReplace)
	}
	st, err := os.Lstat(out)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s: %w: not a directory", out, ErrReplace)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	if len(ents) == 0 {
		return nil
	}
	var side PlanSide
	b, err := os.ReadFile(filepath.Join(out, PlanFile))
	if err == nil && json.Unmarshal(b, &side) == nil && strings.HasPrefix(side.WrittenBy, WrittenBy) {
		return nil
	}
	return fmt.Errorf("%s: %w: not a checkpoint this tool wrote (no %s marked %q) and not empty", out, ErrReplace, PlanFile, WrittenBy)
}

// notSource refuses an output directory that is the source model's directory
// or holds it.
func notSource(out, srcDir string) error {
	if src, err := filepath.Abs(srcDir); err == nil && within(src, out) {
		return fmt.Errorf("%s: %w: it is the source model's directory or holds it", out, ErrReplace)
	}
	return nil
}

// within reports whether path is dir or lies under it (symbolic links resolved
// where they can be).
func within(path, dir string) bool {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && (rel == "." || (rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))))
}
