package place

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// ErrGPU: a device could not take a tensor (out of memory, driver error), or
// the bytes read back differ from those uploaded.
var ErrGPU = errors.New("place: GPU placement failed")

// DeviceReport is what --gpu placed on one device.
type DeviceReport struct {
	Device      string `json:"device"` // "cuda:0"
	Name        string `json:"name"`
	Tensors     int    `json:"tensors"`
	PlacedBytes int64  `json:"placed_bytes"` // payload bytes uploaded
	// FreeBefore and FreeAfter are the driver's free memory when the device
	// was opened and after the last upload; UsedBytes is their difference.
	FreeBefore int64 `json:"free_before_bytes"`
	FreeAfter  int64 `json:"free_after_bytes"`
	UsedBytes  int64 `json:"used_bytes"`
	// PlannedWeights is the plan's prediction for the weights on this device
	// (4-bit weights with their constants and the non-quantized parameters);
	// PlannedTotal its predicted training peak. Zero without a plan.
	PlannedWeights int64 `json:"planned_weight_bytes,omitempty"`
	PlannedTotal   int64 `json:"planned_total_bytes,omitempty"`
}

func gpuAvailable() error {
	if _, err := gpu.Devices(); err != nil {
		if errors.Is(err, gpu.ErrNoCUDA) {
			return ErrNoCUDA
		}
		return fmt.Errorf("%w: %w", ErrGPU, err)
	}
	return nil
}

type heldTensor struct {
	t   *tensorstream.Tensor
	dev int
	buf *gpu.Buffer
}

type gpuDevice struct {
	d   *gpu.Device
	rep DeviceReport
}

// gpuPlacer uploads each tensor to its planned device and keeps it there
// until the end, when it reports and (with an emitter) reads everything back.
type gpuPlacer struct {
	devs map[int]*gpuDevice
	held []heldTensor
	em   *emitter
	plan map[int]DeviceReport // the plan's predictions
}

func newGPUPlacer(h *tensorstream.Header, em *emitter) (*gpuPlacer, error) {
	g := &gpuPlacer{devs: map[int]*gpuDevice{}, em: em, plan: map[int]DeviceReport{}}
	p, err := sections.GetPlan(h)
	if err != nil || p == nil {
		return g, err
	}
	for _, d := range p.Devices {
		r := DeviceReport{PlannedTotal: d.Total}
		for _, it := range d.Items {
			if strings.HasPrefix(it.Name, "4-bit weights") || strings.HasPrefix(it.Name, "non-quantized parameters") {
				r.PlannedWeights += it.Bytes
			}
		}
		g.plan[d.Index] = r
	}
	return g, nil
}

// ordinal parses the "device" annotation: "cuda:N" or "N"; none means GPU 0.
func ordinal(t *tensorstream.Tensor) (int, error) {
	s := t.AnnString(tensorstream.AnnDevice)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s, "cuda:"))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("tensor %q: %w: device %q is not cuda:N", t.Name, ErrGPU, s)
	}
	return n, nil
}

func (g *gpuPlacer) device(n int) (*gpuDevice, error) {
	if d, ok := g.devs[n]; ok {
		return d, nil
	}
	d, err := gpu.Open(n)
	if err != nil {
		return nil, fmt.Errorf("cuda:%d: %w: %w", n, ErrGPU, err)
	}
	info, err := d.Info()
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("cuda:%d: %w: %w", n, ErrGPU, err)
	}
	gd := &gpuDevice{d: d, rep: DeviceReport{Device: "cuda:" + strconv.Itoa(n), Name: info.Name, FreeBefore: info.FreeBytes}}
	if p, ok := g.plan[n]; ok {
		gd.rep.PlannedWeights, gd.rep.PlannedTotal = p.PlannedWeights, p.PlannedTotal
	}
	g.devs[n] = gd
	return gd, nil
}

// place uploads t's payload, read whole from payload (memory: the largest
// tensor), and returns a reader of the same bytes for the checkpoint writer.
func (g *gpuPlacer) place(t *tensorstream.Tensor, payload io.Reader) (io.Reader, error) {
	n, err := ordinal(t)
	if err != nil {
		return nil, err
	}
	d, err := g.device(n)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	buf := make([]byte, t.Size)
	if _, err := io.ReadFull(payload, buf); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if _, err := io.Copy(io.Discard, payload); err != nil { // the trailer: checksum, nested offset
		return nil, err
	}
	b, err := d.d.Upload(buf)
	if err != nil {
		return nil, fmt.Errorf("tensor %q (%d bytes) on %s: %w: %w", t.Name, t.Size, d.rep.Device, ErrGPU, err)
	}
	g.held = append(g.held, heldTensor{t: t.Clone(), dev: n, buf: b})
	d.rep.Tensors++
	d.rep.PlacedBytes += t.Size
	return bytes.NewReader(buf), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// finish measures each device and, with an emitter, writes the tensors read
// back from device memory, checking each against its stream checksum.
func (g *gpuPlacer) finish(rep *Report) error {
	ords := make([]int, 0, len(g.devs))
	for n := range g.devs {
		ords = append(ords, n)
	}
	sort.Ints(ords)
	for _, n := range ords {
		d := g.devs[n]
		info, err := d.d.Info()
		if err != nil {
			return fmt.Errorf("%s: %w: %w", d.rep.Device, ErrGPU, err)
		}
		d.rep.FreeAfter = info.FreeBytes
		d.rep.UsedBytes = d.rep.FreeBefore - d.rep.FreeAfter
		rep.GPU = append(rep.GPU, d.rep)
	}
	if g.em == nil {
		return nil
	}
	for _, h := range g.held {
		buf := make([]byte, h.t.Size)
		if err := h.buf.Download(buf); err != nil {
			return fmt.Errorf("tensor %q from cuda:%d: %w: %w", h.t.Name, h.dev, ErrGPU, err)
		}
		if c := crc32.Checksum(buf, castagnoli); c != h.t.Checksum {
			return fmt.Errorf("tensor %q from cuda:%d: %w: read back with CRC-32C %08x, uploaded %08x", h.t.Name, h.dev, ErrGPU, c, h.t.Checksum)
		}
		if err := g.em.tensor(h.t); err != nil {
			return err
		}
		if _, err := g.em.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

func (g *gpuPlacer) close() {
	for _, h := range g.held {
		h.buf.Free()
	}
	g.held = nil
	for _, d := range g.devs {
		d.d.Close()
	}
}
