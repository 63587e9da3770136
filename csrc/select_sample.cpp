// CPU kernel of adjust_kernels::select_sample (math in select_sample.h).
//
// Work is split into (row, vocabulary tile) items of a fixed size, run with at::parallel_for (OpenMP
// when built with -fopenmp, serial otherwise); the per-tile states are then merged per row in tile
// order. The split does not depend on the thread count, so results are bit-identical for any
// torch.set_num_threads / OMP_NUM_THREADS.
#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "select_sample.h"

namespace adjust {

Score check_select_sample_args(const at::Tensor& logits, double temperature, c10::string_view score,
                               int64_t exclude_token) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "select_sample: logits must be 2-D [N, V], got ", logits.dim(), "-D");
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "select_sample: logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(logits.is_contiguous(), "select_sample: logits must be contiguous");
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= 0,
                    "select_sample: temperature must be finite and >= 0, got ", temperature);
  TORCH_CHECK_VALUE(exclude_token >= -1 && exclude_token < logits.size(1),
                    "select_sample: exclude_token must be -1 or in [0, V), got ", exclude_token);
  if (score == "entropy") return Score::kEntropy;
  if (score == "confidence") return Score::kConfidence;
  if (score == "margin") return Score::kMargin;
  if (score == "low_confidence") return Score::kLowConfidence;
  TORCH_CHECK_VALUE(false, "select_sample: unknown score '", score,
                    "' (expected entropy, confidence, margin or low_confidence)");
}

namespace {

constexpr int64_t kTile = 4096;             // tokens per work item: fits in L1, fixed for determinism
constexpr int64_t kParallelGrain = 32768;   // tokens below which threading costs more than it saves

std::tuple<at::Tensor, at::Tensor> select_sample_cpu(const at::Tensor& logits, double temperature,
                                                     c10::string_view score, int64_t seed, int64_t offset,
                                                     int64_t exclude_token) {
  const Score kind = check_select_sample_args(logits, temperature, score, exclude_token);
  const int64_t n = logits.size(0), vocab = logits.size(1);
  at::Tensor tokens = at::empty({n}, logits.options().dtype(at::kLong));
  at::Tensor scores = at::empty({n}, logits.options().dtype(at::kFloat));
  const bool sample = temperature > 0;
  const Opts opts{sample, sample && kind == Score::kLowConfidence, static_cast<uint64_t>(seed),
                  static_cast<uint64_t>(offset)};
  const float temp = static_cast<float>(temperature);
  const int64_t tiles = std::max<int64_t>(1, (vocab + kTile - 1) / kTile);
  std::vector<RowState> part(n * tiles);

  ADJUST_DISPATCH_LOGITS(logits.scalar_type(), "select_sample_cpu", [&] {
    const scalar_t* base = logits.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, std::min(vocab, kTile)));
    at::parallel_for(0, n * tiles, grain, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / tiles, v0 = (item % tiles) * kTile, v1 = std::min(vocab, v0 + kTile);
        const scalar_t* x_row = base + row * vocab;
        RowState st = empty_state();
        for (int64_t v = v0; v < v1; ++v) {
          const float x = static_cast<float>(x_row[v]);
          const float z = sample ? x / temp : x;
          if (v == exclude_token || z == -INFINITY) continue;
          push(st, x, z, v, row, opts);
        }
        part[item] = st;
      }
    });
  });

  int64_t* tok_out = tokens.data_ptr<int64_t>();
  float* score_out = scores.data_ptr<float>();
  at::parallel_for(0, n, std::max<int64_t>(1, kParallelGrain / tiles), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      RowState st = part[row * tiles];
      for (int64_t j = 1; j < tiles; ++j) st = merge(st, part[row * tiles + j]);
      const Result res = finalize(st, kind, sample);
      tok_out[row] = res.token;
      score_out[row] = res.score;
    }
  });
  return {tokens, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(adjust_kernels, CPU, m) { m.impl("select_sample", &select_sample_cpu); }

}  // namespace adjust
