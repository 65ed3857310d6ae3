// Writes, for every float32 mantissa m (x = 1 + m/2^23), how far the GPU's
// rcp.approx.ftz.f32(x) lies from the correctly rounded 1/x, in units in the last
// place, two bits per mantissa (0: equal, 1: one ulp above, 3: one ulp below),
// four to a byte, lowest mantissa in the low bits. Fails if any other distance
// occurs. Build and run on a GPU:
//   nvcc -O2 -o rcpdelta rcpdelta.cu && ./rcpdelta > rcpdelta.bin
#include <cstdio>
#include <cstdint>
#include <cstring>

__global__ void k(uint8_t* out, int* bad, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i * 4 >= n) return;
  uint8_t b = 0;
  for (int j = 0; j < 4; j++) {
    float x = __uint_as_float(0x3F800000u | (uint32_t)(i * 4 + j));
    float a;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(a) : "f"(x));
    int d = (int)__float_as_uint(a) - (int)__float_as_uint(__frcp_rn(x));
    if (d < -1 || d > 1) atomicAdd(bad, 1);
    b |= (uint8_t)(d & 3) << (2 * j);
  }
  out[i] = b;
}

int main() {
  const int n = 1 << 23;
  uint8_t* out; int* bad;
  cudaMallocManaged(&out, n / 4); cudaMallocManaged(&bad, 4); *bad = 0;
  k<<<n / 4 / 256, 256>>>(out, bad, n);
  cudaDeviceSynchronize();
  if (*bad) { fprintf(stderr, "%d mantissas more than one ulp off\n", *bad); return 1; }
  fwrite(out, 1, n / 4, stdout);
  return 0;
}
