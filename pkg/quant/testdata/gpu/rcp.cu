// Measures the float32 reciprocal that bitsandbytes' CUDA kernels use. They are
// built with --use_fast_math, so 1.0f/absmax compiles to rcp.approx.ftz.f32,
// which is not always the correctly rounded reciprocal. Build and run on a GPU:
//   nvcc -O2 --use_fast_math -o rcp rcp.cu && ./rcp > rcp.txt
// Prints: a summary, then for each 10-bit mantissa m the bits of 1/(1+m/1024)
// as rcp.approx.ftz.f32 returns them.
#include <cstdio>
#include <cstdint>
#include <cstring>

__global__ void k(const float* x, float* approx, float* rn, float* fm, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x[i]));
  approx[i] = r;
  rn[i] = __frcp_rn(x[i]);
  fm[i] = 1.0f / x[i];  // what --use_fast_math makes of the source's division
}

static uint32_t bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static float fromBits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }

int main() {
  const int n = 1 << 23;
  float *x, *a, *r, *f;
  cudaMallocManaged(&x, n * 4); cudaMallocManaged(&a, n * 4);
  cudaMallocManaged(&r, n * 4); cudaMallocManaged(&f, n * 4);
  for (int e = 0; e < 3; e++) {
    uint32_t exps[3] = {0x3F800000u, 0x3A000000u, 0x46000000u};  // 1, 2^-11, 2^13
    for (int m = 0; m < n; m++) x[m] = fromBits(exps[e] | (uint32_t)m);
    k<<<n / 256, 256>>>(x, a, r, f, n);
    cudaDeviceSynchronize();
    long diff = 0, fmdiff = 0, up = 0;
    for (int m = 0; m < n; m++) {
      if (bits(a[m]) != bits(r[m])) { diff++; if (bits(a[m]) > bits(r[m])) up++; }
      if (bits(a[m]) != bits(f[m])) fmdiff++;
    }
    printf("exp %08x: approx != rn for %ld of %d mantissas (%ld above); fast-math 1/x != approx for %ld\n",
           exps[e], diff, n, up, fmdiff);
    if (e == 0) {
      printf("table\n");
      for (int m = 0; m < 1024; m++) printf("%08x %08x\n", bits(a[m << 13]), bits(r[m << 13]));
      // every mantissa where approx differs from rn, as a bitmap-ish list count per 1/1024 bucket
    }
  }
  return 0;
}
