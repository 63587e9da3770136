// CUDA kernel of adjust_kernels::select_sample (math in select_sample.h, shared with the CPU kernel).
//
// One block per row: each of kThreads threads streams tokens tid, tid + kThreads, ... into its own
// RowState, then the states are merged by warp shuffles and across warps by thread 0, in a fixed order,
// so results are deterministic. Kept deliberately small and plain because most build machines here
// have no GPU to run it: everything that decides a result is the shared, CPU-tested code; this file
// only adds the per-row traversal and the block reduction. setup.py compiles it only when torch has
// CUDA and nvcc is found.
#include <tuple>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "select_sample.h"

namespace adjust {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ RowState shfl_down(const RowState& s, int delta) {
  constexpr unsigned kAll = 0xffffffffu;
  RowState o;
  o.m = __shfl_down_sync(kAll, s.m, delta);
  o.s = __shfl_down_sync(kAll, s.s, delta);
  o.t = __shfl_down_sync(kAll, s.t, delta);
  o.top2 = __shfl_down_sync(kAll, s.top2, delta);
  o.top1 = __shfl_down_sync(kAll, s.top1, delta);
  o.key = __shfl_down_sync(kAll, s.key, delta);
  o.tok = __shfl_down_sync(kAll, s.tok, delta);
  o.z_tok = __shfl_down_sync(kAll, s.z_tok, delta);
  o.x_tok = __shfl_down_sync(kAll, s.x_tok, delta);
  o.mr = __shfl_down_sync(kAll, s.mr, delta);
  o.sr = __shfl_down_sync(kAll, s.sr, delta);
  return o;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    select_sample_kernel(const scalar_t* __restrict__ logits, int64_t vocab, float temperature,
                         int64_t exclude_token, Score score, Opts opts, int64_t* __restrict__ tokens,
                         float* __restrict__ scores) {
  const int64_t row = blockIdx.x;
  const scalar_t* x_row = logits + row * vocab;
  RowState st = empty_state();
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = static_cast<float>(x_row[v]);
    const float z = opts.sample ? x / temperature : x;
    if (v == exclude_token || z == -INFINITY) continue;
    push(st, x, z, v, row, opts);
  }
  // Lanes whose partner is out of range merge with themselves; lane 0 never reads those lanes.
  for (int delta = 16; delta > 0; delta >>= 1) st = merge(st, shfl_down(st, delta));

  __shared__ RowState warp_states[kWarps];
  if (threadIdx.x % 32 == 0) warp_states[threadIdx.x / 32] = st;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) st = merge(st, warp_states[w]);
    const Result res = finalize(st, score, opts.sample);
    tokens[row] = res.token;
    scores[row] = res.score;
  }
}

std::tuple<at::Tensor, at::Tensor> select_sample_cuda(const at::Tensor& logits, double temperature,
                                                      c10::string_view score, int64_t seed, int64_t offset,
                                                      int64_t exclude_token) {
  const Score kind = check_select_sample_args(logits, temperature, score, exclude_token);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t n = logits.size(0), vocab = logits.size(1);
  at::Tensor tokens = at::empty({n}, logits.options().dtype(at::kLong));
  at::Tensor scores = at::empty({n}, logits.options().dtype(at::kFloat));
  if (n == 0) return {tokens, scores};
  TORCH_CHECK_VALUE(n <= INT32_MAX, "select_sample: too many rows for one launch: ", n);
  const bool sample = temperature > 0;
  const Opts opts{sample, sample && kind == Score::kLowConfidence, static_cast<uint64_t>(seed),
                  static_cast<uint64_t>(offset)};
  ADJUST_DISPATCH_LOGITS(logits.scalar_type(), "select_sample_cuda", [&] {
    select_sample_kernel<scalar_t><<<static_cast<unsigned>(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        logits.const_data_ptr<scalar_t>(), vocab, static_cast<float>(temperature), exclude_token, kind, opts,
        tokens.data_ptr<int64_t>(), scores.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {tokens, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(adjust_kernels, CUDA, m) { m.impl("select_sample", &select_sample_cuda); }

}  // namespace adjust
