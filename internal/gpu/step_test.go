package gpu

import "testing"

// TestPipelineStep: steps are whole multiples of the alignment (so every
// step but the last starts and ends on a block and tile boundary), never
// larger than the workspace's chunk, and cut a run smaller than four chunks
// into about four.
func TestPipelineStep(t *testing.T) {
	const align = 4096
	for _, chunk := range []int64{1 << 18, 16 << 20} {
		for _, n := range []int64{1, 4095, 4097, 1 << 19, 1<<20 + 17, 2<<20 + 17, 3 << 20, 8<<20 + 1, 4 * chunk, 4*chunk - 1, 9 * chunk} {
			s := pipelineStep(n, chunk, align)
			if s%align != 0 || s <= 0 || s > chunk {
				t.Errorf("n %d, chunk %d: step %d", n, chunk, s)
			}
			steps := (n + s - 1) / s
			switch {
			case n >= 4*chunk && s != chunk:
				t.Errorf("n %d, chunk %d: step %d, want the chunk", n, chunk, s)
			case n < 4*chunk && n >= 4*minStepElems && s < chunk && (steps < pipelineSteps || steps > pipelineSteps+1):
				t.Errorf("n %d, chunk %d: %d steps of %d, want about %d", n, chunk, steps, s, pipelineSteps)
			}
		}
	}
}
