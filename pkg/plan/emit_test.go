package plan

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestEmitPython: the snippet implements what the plan decided, and is
// valid Python (checked with python3's parser when python3 is installed).
func TestEmitPython(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, x := range []struct {
		cfg, gpus string
		s         func(*Settings)
		want      []string
		not       []string
	}{
		{"meta-llama__Llama-3.1-8B.json", "t4", func(s *Settings) {},
			[]string{"AutoModelForCausalLM", "fp16=True", "torch.float16", "save_on_cpu", "OffloadTrainer", "prepare_model_for_kbit_training", `optim="paged_adamw_8bit"`, "def train_dataset", "SEQ_LEN, BATCH = 2048, 1"},
			[]string{"bf16=True", "AutoModelForImageTextToText"}},
		{"Qwen__Qwen2.5-VL-7B-Instruct.json", "a100-80", func(s *Settings) { s.Recipe, s.Optimizer = RecipeLean, AdamW },
			[]string{"AutoModelForImageTextToText", "bf16=True", "enable_input_require_grads", `optim="adamw"`, "flash_attention_2",
				`"model.language_model.layers.0": 0,`, `"model.visual": 0,`, `"lm_head": 0,`},
			[]string{"prepare_model_for_kbit_training(", "save_on_cpu", `"model.layers.0"`, `"visual"`}},
		{"google__gemma-3-4b-it.json", "h100", func(s *Settings) { s.Checkpointing = CkptOn; s.SeqLen = 4096 },
			[]string{"AutoModelForImageTextToText", "gradient_checkpointing=True", "SEQ_LEN, BATCH = 4096, 1",
				`"model.language_model.layers.0": 0,`, `"model.vision_tower": 0,`, `"lm_head": 0,`},
			[]string{"save_on_cpu", `"language_model.model.`, `"vision_tower"`}},
	} {
		s := DefaultSettings()
		x.s(&s)
		_, p := mustPlan(t, x.cfg, x.gpus, s)
		var b bytes.Buffer
		if err := p.WritePython(&b, "/models/x"); err != nil {
			t.Fatal(err)
		}
		code := b.String()
		for _, w := range x.want {
			if !strings.Contains(code, w) {
				t.Errorf("%s on %s: snippet lacks %q", x.cfg, x.gpus, w)
			}
		}
		for _, n := range x.not {
			if strings.Contains(code, n) {
				t.Errorf("%s on %s: snippet has %q", x.cfg, x.gpus, n)
			}
		}
		name := filepath.Join(dir, strconv.Itoa(len(files))+".py")
		if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Logf("python3 not installed: syntax not checked")
		return
	}
	cmd := exec.Command(py, append([]string{"-c", "import ast, sys\nfor f in sys.argv[1:]: ast.parse(open(f).read(), f)"}, files...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("not valid Python: %v\n%s", err, out)
	}
}
