// q4avx2: 4-bit (and 8-bit) block-quantized weights x 8-bit block-quantized activations on AVX2 + FMA.
//
// Algorithm reference: llama.cpp / ggml's Q4_1 x Q8_1 and Q8_0 x Q8_0 dot products (Georgi Gerganov and
// contributors, https://github.com/ggml-org/llama.cpp, ggml/src/ggml-cpu). This is an independent
// implementation of the same arithmetic; no ggml code is copied. The Python side
// (arrowdiff/weights/q4avx2.py) builds the weight blocks, compiles this file once and holds a pure-torch
// reference of the same math.
//
// Weights (N, K) are cut along K into blocks of 32 values; one output row's blocks are contiguous:
//   bits 4: 20 bytes = fp16 d, fp16 m, 16 bytes of codes c in 0..15 (byte j: c[j] low nibble,
//           c[j + 16] high nibble)                                                   w = d * c + m
//   bits 8: 36 bytes = fp16 d, fp16 m, 32 int8 codes c in -128..127                 w = d * c + m
// Activations, per row and block of 32 (Q8_1-like, fp32 scale): a = max|x|, dx = a / 127,
//   q = round_half_even(x * (127 / a)) in -127..127, sx = dx * sum(q); a block of zeros gives q = 0, dx = 0.
// One block's contribution: d * dx * dot(c, q) + m * sx; the integer dot runs on
// _mm256_maddubs_epi16 (u8 x i8 -> i16 pairs) then _mm256_madd_epi16 with ones (-> 8 x i32).
// K need not be a multiple of 32: the activations' last block is zero-filled (pad codes then add nothing).
// Decode (one row of x) takes four weight rows at a time, prefetching ahead; more rows of x go in tiles
// of up to 4 sharing each decoded weight block. Output rows are split over threads with at::parallel_for (OpenMP, torch's
// own thread count and runtime).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace {

constexpr int64_t QK = 32;          // values per block
constexpr int64_t Q4_BYTES = 20;    // fp16 d, fp16 m, 16 bytes of nibbles
constexpr int64_t Q8_BYTES = 36;    // fp16 d, fp16 m, 32 int8
constexpr int64_t MAX_TILE = 4;     // rows of x sharing one decoded weight block
constexpr int64_t ROW_CHUNK = 64;   // rows of x per pass over a thread's output rows (cache blocking)
// Decode streams every weight once from DRAM, in rows of only 360-960 bytes for SmolLM2: the hardware
// prefetcher barely ramps up within a tile, so each tile of 4 rows first prefetches the tile this many
// tiles ahead (measured on the 2-core AVX2 machine: 11 -> 7.8 ms per SmolLM2 token; 1, 2 and 4 alike).
constexpr int64_t PREFETCH_TILES = 2;

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// One row of x (K floats) -> nb blocks of 32 int8 codes q and nb pairs ds[2b] = dx, ds[2b + 1] = sx
// (scale and dx * sum(q), side by side so that one 8-byte load fetches both).
void quantize_row(const float* x, int64_t K, int64_t nb, int8_t* q, float* ds) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  alignas(32) float tail[QK];
  for (int64_t b = 0; b < nb; ++b) {
    const float* src = x + b * QK;
    if ((b + 1) * QK > K) {  // last, partial block: zero-fill
      const int64_t n = K - b * QK;
      std::fill(tail, tail + QK, 0.0f);
      std::memcpy(tail, src, n * sizeof(float));
      src = tail;
    }
    __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
    __m256 v2 = _mm256_loadu_ps(src + 16), v3 = _mm256_loadu_ps(src + 24);
    __m256 amax = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign_bit, v0), _mm256_andnot_ps(sign_bit, v1)),
                                _mm256_max_ps(_mm256_andnot_ps(sign_bit, v2), _mm256_andnot_ps(sign_bit, v3)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float a = _mm_cvtss_f32(m4);
    const float d = a / 127.0f;
    const float id = a > 0.0f ? 127.0f / a : 0.0f;
    const __m256 mul = _mm256_set1_ps(id);
    constexpr int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;  // half to even, as torch.round
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), rnd));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), rnd));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), rnd));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), rnd));
    const int32_t total = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    // int32 -> int8 keeping element order: the packs work per 128-bit lane, the permute restores order
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * QK), i0);
    ds[2 * b] = d;
    ds[2 * b + 1] = d * static_cast<float>(total);
  }
}

// Unsigned 4-bit codes of one block as 32 bytes in element order (low nibbles = elements 0..15).
inline __m256i q4_codes(const uint8_t* blk) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

// dot(w, x) per 32-bit lane for one block: 4-bit w (u8 0..15) or, with the sign trick, 8-bit w (i8).
template <int BITS>
inline __m256 block_dot(__m256i w, __m256i wabs, const int8_t* xq) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  __m256i p;
  if constexpr (BITS == 4) {
    p = _mm256_maddubs_epi16(w, x);  // |pair sum| <= 2 * 15 * 127: no saturation
  } else {
    p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x, w));  // |pair sum| <= 2 * 128 * 127 < 32768
  }
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// R consecutive weight rows (stride nb blocks) against T rows of x (codes stride nb * 32, (dx, sx) pairs
// stride nb) -> out[r * T + t]. Every (r, t) pair has its own accumulators, so R * T independent FMA
// chains hide the FMA latency: decode (M = 1) uses R = 4, T = 1; prefill R = 1, T = 4. Per block the
// scalars travel as one vector: (d, m) * (dx, sx) = (d dx, m sx); lane 0 scales the integer dot, lane 1
// accumulates the min term.
template <int BITS, int R, int T>
inline void dot_tile(const uint8_t* wrow, int64_t nb, const int8_t* xq, const float* ds, float* out) {
  constexpr int64_t BB = BITS == 4 ? Q4_BYTES : Q8_BYTES;
  __m256 acc[R][T];
  __m128 macc[R][T];  // lane 1: sum over blocks of m * sx
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_ps();
      macc[r][t] = _mm_setzero_ps();
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = wrow + (r * nb + b) * BB;
      int32_t dm_bits;
      std::memcpy(&dm_bits, blk, 4);
      const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));  // (d, m, 0, 0)
      __m256i w, wabs;
      if constexpr (BITS == 4) {
        w = q4_codes(blk);
        wabs = w;
      } else {
        w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 4));
        wabs = _mm256_sign_epi8(w, w);  // |w| as u8 (-128 -> 128)
      }
      for (int t = 0; t < T; ++t) {
        const int64_t i = t * nb + b;
        const __m256 p = block_dot<BITS>(w, wabs, xq + i * QK);
        const __m128 xs = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(ds + 2 * i)));
        const __m128 prod = _mm_mul_ps(dm, xs);  // (d dx, m sx, 0, 0)
        acc[r][t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, acc[r][t]);
        macc[r][t] = _mm_add_ps(macc[r][t], prod);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      out[r * T + t] = hsum(acc[r][t]) + _mm_cvtss_f32(_mm_shuffle_ps(macc[r][t], macc[r][t], 1));
    }
  }
}

template <int BITS>
void gemm_impl(const float* x, int64_t M, int64_t K, const uint8_t* w, int64_t N, const float* bias,
               float* y) {
  constexpr int64_t BB = BITS == 4 ? Q4_BYTES : Q8_BYTES;
  const int64_t nb = (K + QK - 1) / QK;
  thread_local std::vector<int8_t> xq_buf;
  thread_local std::vector<float> ds_buf;
  xq_buf.resize(static_cast<size_t>(M * nb * QK));
  ds_buf.resize(static_cast<size_t>(M * nb * 2));
  int8_t* xq = xq_buf.data();
  float* ds = ds_buf.data();
  const int64_t row_grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(K, 1));
  at::parallel_for(0, M, row_grain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) quantize_row(x + m * K, K, nb, xq + m * nb * QK, ds + m * nb * 2);
  });
  // about 32k weights per task: small layers stay on one thread, where a fork would cost more than it saves
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(nb * QK * std::min<int64_t>(M, 8), 1));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    float out[4 * MAX_TILE];
    if (M == 1) {  // decode: four weight rows at a time
      int64_t n = n0;
      const uint8_t* wend = w + n1 * nb * BB;
      for (; n + 4 <= n1; n += 4) {
        const uint8_t* ahead = w + (n + 4 * PREFETCH_TILES) * nb * BB;  // software prefetch, see above
        for (int64_t o = 0; o < 4 * nb * BB && ahead + o < wend; o += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(ahead + o), _MM_HINT_T0);
        }
        dot_tile<BITS, 4, 1>(w + n * nb * BB, nb, xq, ds, out);
        for (int r = 0; r < 4; ++r) y[n + r] = out[r] + (bias ? bias[n + r] : 0.0f);
      }
      for (; n < n1; ++n) {
        dot_tile<BITS, 1, 1>(w + n * nb * BB, nb, xq, ds, out);
        y[n] = out[0] + (bias ? bias[n] : 0.0f);
      }
      return;
    }
    for (int64_t c0 = 0; c0 < M; c0 += ROW_CHUNK) {
      const int64_t c1 = std::min(M, c0 + ROW_CHUNK);
      for (int64_t n = n0; n < n1; ++n) {
        const uint8_t* wrow = w + n * nb * BB;
        const float bn = bias ? bias[n] : 0.0f;
        for (int64_t r0 = c0; r0 < c1; r0 += MAX_TILE) {
          const int64_t t = std::min(MAX_TILE, c1 - r0);
          const int8_t* q = xq + r0 * nb * QK;
          const float* d = ds + r0 * nb * 2;
          switch (t) {
            case 4: dot_tile<BITS, 1, 4>(wrow, nb, q, d, out); break;
            case 3: dot_tile<BITS, 1, 3>(wrow, nb, q, d, out); break;
            case 2: dot_tile<BITS, 1, 2>(wrow, nb, q, d, out); break;
            default: dot_tile<BITS, 1, 1>(wrow, nb, q, d, out); break;
          }
          for (int64_t i = 0; i < t; ++i) y[(r0 + i) * N + n] = out[i] + bn;
        }
      }
    }
  });
}

// y (M, N) fp32 = x (M, K) fp32 @ W^T (+ bias), W as blocks (N, ceil(K / 32) * block bytes) uint8.
at::Tensor gemm(const at::Tensor& x, const at::Tensor& w, int64_t bits, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(bits == 4 || bits == 8, "q4avx2: bits must be 4 or 8, got ", bits);
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "q4avx2: CPU tensors only");
  TORCH_CHECK(x.dim() == 2 && at::isFloatingType(x.scalar_type()), "q4avx2: x must be a 2-D float tensor");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kByte && w.is_contiguous(),
              "q4avx2: w must be a contiguous 2-D uint8 block tensor");
  const at::Tensor xc = x.to(at::kFloat).contiguous();  // no copy when x is fp32 and contiguous
  const int64_t M = xc.size(0), K = xc.size(1), N = w.size(0);
  const int64_t nb = (K + QK - 1) / QK;
  const int64_t bb = bits == 4 ? Q4_BYTES : Q8_BYTES;
  TORCH_CHECK(w.size(1) == nb * bb, "q4avx2: weight rows hold ", w.size(1), " bytes; in_features=", K,
              " at ", bits, " bits needs ", nb * bb);
  at::Tensor bc;
  const float* bp = nullptr;
  if (bias.has_value() && bias->defined()) {
    bc = bias->contiguous();
    TORCH_CHECK(bc.scalar_type() == at::kFloat && bc.numel() == N, "q4avx2: bias must be float32 with ",
                N, " values");
    bp = bc.data_ptr<float>();
  }
  at::Tensor y = at::empty({M, N}, xc.options());
  if (M == 0 || N == 0) return y;
  if (bits == 4) {
    gemm_impl<4>(xc.data_ptr<float>(), M, K, w.data_ptr<uint8_t>(), N, bp, y.data_ptr<float>());
  } else {
    gemm_impl<8>(xc.data_ptr<float>(), M, K, w.data_ptr<uint8_t>(), N, bp, y.data_ptr<float>());
  }
  return y;
}

// The activations' Q8_1-like quantization alone: codes (M, nb * 32) int8 and (M, nb, 2) fp32 pairs
// (dx, sx); the tests compare it with the pure-torch reference.
std::tuple<at::Tensor, at::Tensor> quantize_activations(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && at::isFloatingType(x.scalar_type()), "q4avx2: x must be a 2-D float tensor");
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), nb = (K + QK - 1) / QK;
  at::Tensor q = at::empty({M, nb * QK}, xc.options().dtype(at::kChar));
  at::Tensor ds = at::empty({M, nb, 2}, xc.options());
  for (int64_t m = 0; m < M; ++m) {
    quantize_row(xc.data_ptr<float>() + m * K, K, nb, q.data_ptr<int8_t>() + m * nb * QK,
                 ds.data_ptr<float>() + m * nb * 2);
  }
  return {q, ds};
}

}  // namespace

TORCH_LIBRARY(arrowdiff_q4avx2, m) {
  m.def("gemm(Tensor x, Tensor w, int bits, Tensor? bias) -> Tensor");
  m.def("quantize_activations(Tensor x) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(arrowdiff_q4avx2, CPU, m) {
  m.impl("gemm", &gemm);
  m.impl("quantize_activations", &quantize_activations);
}
