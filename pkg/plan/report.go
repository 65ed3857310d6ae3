package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nf4pipe/nf4pipe/internal/units"
)

// WriteJSON writes the plan as an indented JSON object.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteReport writes the human report: per device the itemized bytes, total,
// capacity and headroom, then the decisions with their reasons, then advice.
func (p *Plan) WriteReport(w io.Writer) error {
	var b strings.Builder
	verdict := strings.ToUpper(string(p.Verdict))
	if p.Verdict == VerdictTight {
		verdict = fmt.Sprintf("TIGHT (fits as predicted, but within the model's error of %.0f%%)", 100*ModelError)
	}
	fmt.Fprintf(&b, "plan: %s, seq %d x batch %d, LoRA r=%d (%s trainable parameters), recipe %s: %s\n",
		p.Model, p.SeqLen, p.BatchSize, p.LoRARank, groupDigits(p.TrainableParams), p.Recipe, verdict)
	for _, d := range p.Devices {
		layers := "no decoder layers"
		if len(d.Layers) == 2 {
			layers = fmt.Sprintf("layers %d-%d", d.Layers[0], d.Layers[1])
		}
		fmt.Fprintf(&b, "\ncuda:%d %s (%s), %s\n", d.Index, d.Name, units.Bytes(d.CapacityBytes), layers)
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
		for _, it := range d.Items {
			note := it.Note
			if !it.Torch {
				note = strings.TrimSpace("[not in torch reserved] " + note)
			}
			fmt.Fprintf(tw, "  %s\t%s\t  %s\t\n", it.Name, units.Bytes(it.Bytes), note)
		}
		fmt.Fprintf(tw, "  predicted torch.cuda.max_memory_reserved\t%s\t\t\n", units.Bytes(d.PeakReserved))
		fmt.Fprintf(tw, "  total on device\t%s\t  of %s\t\n", units.Bytes(d.Total), units.Bytes(d.CapacityBytes))
		fmt.Fprintf(tw, "  headroom\t%s\t\t\n", units.Bytes(d.HeadroomBytes))
		if d.HostBytes > 0 {
			fmt.Fprintf(tw, "  pinned host memory\t%s\t\t\n", units.Bytes(d.HostBytes))
		}
		tw.Flush()
	}
	b.WriteString("\ndecisions:\n")
	for _, x := range []struct {
		k string
		d Decision
	}{{"compute dtype", p.ComputeDType}, {"attention", p.Attention}, {"attention kernel", p.AttentionKernel},
		{"gradient checkpointing", p.GradientCheckpointing}, {"optimizer", p.Optimizer}} {
		fmt.Fprintf(&b, "  %-23s %s: %s\n", x.k, x.d.Value, x.d.Reason)
	}
	if v := p.Vision; v != nil {
		fmt.Fprintf(&b, "  %-23s %s parameters (%s 4-bit), %s; frozen, no LoRA\n", "vision tower", groupDigits(v.TowerParams), groupDigits(v.TowerParams4bit), units.Bytes(v.TowerBytes))
		fmt.Fprintf(&b, "  %-23s %s parameters (%s 4-bit), %s; frozen, no LoRA\n", "projector", groupDigits(v.ProjectorParams), groupDigits(v.ProjectorParams4bit), units.Bytes(v.ProjectorBytes))
		if v.CrossAttentionTokens > 0 {
			fmt.Fprintf(&b, "  %-23s %d a sample x %d cross-attention tokens (%d in the vision tower); the sequence stays %d tokens\n", "image tokens", v.ImagesPerSample, v.CrossAttentionTokens, v.TowerTokens, v.LanguageSeqLen)
		} else {
			fmt.Fprintf(&b, "  %-23s %d a sample x %d tokens (%d in the vision tower): the language model's sequence is %d tokens\n", "image tokens", v.ImagesPerSample, v.ImageTokens, v.TowerTokens, v.LanguageSeqLen)
		}
	}
	fmt.Fprintf(&b, "  %-23s %d (largest batch that fits with margin, these settings)\n", "max batch size", p.MaxBatchSize)
	fmt.Fprintf(&b, "  %-23s %d (longest sequence that fits with margin at batch %d, these settings, checkpointing in any mode auto allows)\n", "max sequence length", p.MaxSeqLen, p.BatchSize)
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	if len(p.Advice) > 0 {
		if p.Verdict == VerdictFits {
			b.WriteString("\nother options (largest device total):\n")
		} else {
			b.WriteString("\nsmallest sets of changes that make it fit, then single changes that do not suffice\n(largest device total under each):\n")
		}
		for _, a := range p.Advice {
			mark := map[Verdict]string{VerdictFits: "fits ", VerdictTight: "tight", VerdictNoFit: "no   "}[a.Verdict]
			fmt.Fprintf(&b, "  [%s] %-80s %s\n", mark, a.Change, units.Bytes(a.PeakBytes))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// peftModules maps roles to peft target module names.
var peftModules = map[string]string{}

func init() {
	for name, role := range targetAliases {
		if len(name) > 2 { // prefer q_proj over w1
			peftModules[role] = name
		}
	}
	peftModules["shared_expert"] = "all-linear"
}

// WritePython prints a training snippet that runs as printed and does what
// the plan decided: the device map, attention, compute dtype, recipe,
// checkpointing (offloaded through torch.autograd.graph.save_on_cpu when
// chosen), optimizer and LoRA settings, with transformers' Trainer. Its
// train_dataset hook makes random token ids of the planned length (the
// memory is the same as with real text) and says how to put real data in.
// It loads modelPath ("" for the model id detect found in the Hugging Face
// cache, else a placeholder).
func (p *Plan) WritePython(w io.Writer, modelPath string) error {
	if modelPath == "" {
		modelPath = p.ModelID
	}
	if modelPath == "" {
		modelPath = "MODEL"
	}
	dtype := "torch.bfloat16"
	if p.ComputeDType.Value == "fp16" {
		dtype = "torch.float16"
	}
	var mods []string
	seen := map[string]bool{}
	for _, r := range p.LoRATargets {
		if n, ok := peftModules[r]; ok && !seen[n] {
			mods, seen[n] = append(mods, strconv.Quote(n)), true
		}
	}
	target := "[" + strings.Join(mods, ", ") + "]"
	if seen["all-linear"] || len(mods) == 0 {
		target = `"all-linear"`
	}
	keys := make([]string, 0, len(p.DeviceMap))
	for k := range p.DeviceMap {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return natLess(keys[i], keys[j]) })
	var dm strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&dm, "    %q: %s,\n", k, p.DeviceMap[k])
	}
	auto := "AutoModelForCausalLM"
	if p.VisionLanguage {
		auto = "AutoModelForImageTextToText"
	}
	gc := p.GradientCheckpointing.Value != "off"
	offload := p.GradientCheckpointing.Value == "offload"
	var peak int64
	for _, d := range p.Devices {
		peak = max(peak, d.PeakReserved)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# nf4pipe plan: %s, seq %d, batch %d, LoRA r=%d, recipe %s: %s
# predicted peak torch.cuda.max_memory_reserved (largest device): %d bytes (%s)
import importlib.util

import torch
from transformers import %s, BitsAndBytesConfig, Trainer, TrainingArguments
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

model_path = %q
SEQ_LEN, BATCH = %d, %d
attn = %q
if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
    print("flash-attn is not installed (pip install flash-attn): using sdpa, whose flash kernel keeps the same memory")
    attn = "sdpa"
device_map = {
%s}
model = %s.from_pretrained(
    model_path,
    quantization_config=BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=%s,
    ),
    dtype=%s,
    device_map=device_map,
    attn_implementation=attn,
)
`, p.Model, p.SeqLen, p.BatchSize, p.LoRARank, p.Recipe, p.Verdict, peak, units.Bytes(peak),
		auto, modelPath, p.SeqLen, p.BatchSize, p.Attention.Value, dm.String(), auto, dtype, dtype)
	if p.Recipe == RecipeHFPeft {
		fmt.Fprintf(&b, "# hf-peft: casts every parameter that is not 4-bit to float32\nmodel = prepare_model_for_kbit_training(\n    model, use_gradient_checkpointing=%s,\n    gradient_checkpointing_kwargs={\"use_reentrant\": False})\n", pyBool(gc))
	} else {
		b.WriteString("# lean: parameters stay 16-bit\n")
		if gc {
			b.WriteString("model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={\"use_reentrant\": False})\n")
		}
		b.WriteString("model.enable_input_require_grads()\n")
	}
	fmt.Fprintf(&b, `model = get_peft_model(model, LoraConfig(
    r=%d, lora_alpha=%d, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
    target_modules=%s%s))
model.print_trainable_parameters()


def train_dataset():
    """The training data: token ids of SEQ_LEN tokens, labels = input_ids.

    Random ids use exactly the memory real text does. For real data, e.g.:
        from datasets import load_dataset
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model_path)
        text = load_dataset("text", data_files="train.txt")["train"]
        ids = tok("\n\n".join(text["text"]), return_tensors="pt").input_ids[0]
        ids = ids[: len(ids) // SEQ_LEN * SEQ_LEN].view(-1, SEQ_LEN)
    """
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (8 * BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": r, "labels": r} for r in ids]
%s

args = TrainingArguments(
    output_dir="out",
    per_device_train_batch_size=BATCH,
    gradient_accumulation_steps=1,
    gradient_checkpointing=%s,
    gradient_checkpointing_kwargs={"use_reentrant": False},
    optim=%q,
    %s=True,
    learning_rate=2e-4,
    num_train_epochs=1,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
)
`, p.LoRARank, p.LoRARank, target, p.excludeVision(), p.imagesHook(), pyBool(gc), string(p.config.Optimizer), p.ComputeDType.Value)
	if offload {
		b.WriteString(`

class OffloadTrainer(Trainer):
    """Offloaded checkpointing: the tensors autograd keeps (the checkpointed
    layer inputs) go to pinned host memory and come back in backward."""

    def compute_loss(self, model, inputs, *a, **kw):
        with torch.autograd.graph.save_on_cpu(pin_memory=True):
            return super().compute_loss(model, inputs, *a, **kw)


trainer = OffloadTrainer(model=model, args=args, train_dataset=train_dataset())
`)
	} else {
		b.WriteString("trainer = Trainer(model=model, args=args, train_dataset=train_dataset())\n")
	}
	b.WriteString(`for d in range(torch.cuda.device_count()):
    torch.cuda.reset_peak_memory_stats(d)  # measure training, not loading
trainer.train()
for d in range(torch.cuda.device_count()):
    print(f"cuda:{d} peak reserved {torch.cuda.max_memory_reserved(d)} bytes")
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// visionModules matches the module names transformers 5 gives a
// vision-language model's vision tower and projector.
const visionModules = `r".*(vision_tower|visual|vision_model|multi_modal_projector).*"`

// excludeVision keeps LoRA out of the vision tower and projector, as the plan
// assumes: peft matches target module names as suffixes (and all-linear takes
// every linear layer), so q_proj, fc1 or gate_proj of the tower would get
// adapters too.
func (p *Plan) excludeVision() string {
	if !p.VisionLanguage {
		return ""
	}
	return ",\n    # LoRA in the language model only, as planned\n    exclude_modules=" + visionModules
}

// imagesHook is the dataset note of a vision-language plan: how to feed
// images, and what the plan assumed.
func (p *Plan) imagesHook() string {
	if !p.VisionLanguage {
		return ""
	}
	n, tok := int64(0), int64(0)
	if p.Vision != nil {
		n, tok = p.Vision.ImagesPerSample, p.Vision.ImageTokens
	}
	return fmt.Sprintf(`
# Images: this dataset is text only; the plan assumed %d image(s) a sample
# (%d tokens each in the sequence; plan --images N). To train on images, build
# each sample with the model's processor, which expands the image placeholder
# into the image tokens and returns pixel_values (and, by family,
# image_grid_thw, aspect_ratio_ids/aspect_ratio_mask/cross_attention_mask or
# token_type_ids), e.g.:
#     from transformers import AutoProcessor
#     proc = AutoProcessor.from_pretrained(model_path)
#     msgs = [{"role": "user", "content": [{"type": "image", "image": img},
#             {"type": "text", "text": prompt}]},
#             {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
#     x = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")
#     sample = {k: v[0] if k in ("input_ids", "attention_mask") else v for k, v in x.items()}
#     sample["labels"] = sample["input_ids"].clone()  # mask the prompt and image tokens with -100
# and give Trainer a data_collator that pads input_ids and stacks the image tensors.
`, n, tok)
}

func pyBool(v bool) string {
	if v {
		return "True"
	}
	return "False"
}

// natLess orders module names with their numbers compared as numbers.
func natLess(a, b string) bool {
	for a != "" && b != "" {
		ia, ib := digitsEnd(a), digitsEnd(b)
		if ia > 0 && ib > 0 {
			na, _ := strconv.Atoi(a[:ia])
			nb, _ := strconv.Atoi(b[:ib])
			if na != nb {
				return na < nb
			}
			a, b = a[ia:], b[ib:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digitsEnd(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
