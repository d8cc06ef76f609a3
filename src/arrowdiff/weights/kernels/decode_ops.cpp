// Fused fp32 ops for one decode step of a LLaMA-style model (one new token), compiled into the same
// extension as q4_gemv.cpp (the Python side, arrowdiff/weights/q4avx2.py, loads both). Each replaces a
// chain of small torch ops whose per-call overhead, not arithmetic, dominates at these sizes:
//
//   add_rms_norm(x?, residual!, weight, eps)   residual += x (in place; x may be None), then returns
//       residual / sqrt(mean(residual^2) + eps) * weight: RMSNorm (Zhang & Sennrich 2019) after the
//       residual add, so a pre-norm block needs one call per norm and no separate add.
//   silu_mul(x)   (..., 2F) -> (..., F): silu(x[..., :F]) * x[..., F:], the SwiGLU product (Shazeer 2020).
//   decode_attention(qkv, k_cache!, v_cache!, cos, sin, pos, H, Hkv)   one new position per sequence:
//       q and k rotated by RoPE (Su et al. 2021, "rotate half" convention, row ``pos`` of the cos/sin
//       tables), k and v written into the caches at ``pos``, then softmax(q k^T / sqrt(hd)) v over the
//       S = pos + 1 cached positions with grouped-query attention (GQA, Ainslie et al. 2023: query head h
//       reads key/value head h / (H / Hkv)). Returns (B, 1, H * hd).
//
// All tensors are fp32 and contiguous (checked). The torch reference these must match to float rounding
// is the ordinary path of arrowdiff/ar/llama.py.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for 8 floats: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial), relative
// error ~1e-7; inputs are clamped to +-88.376 (exp stays finite; exp(-88.376) ~ 4e-39).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  // 2^fx; the clamp keeps fx >= -127, so the biased exponent is >= 0 (0 gives a zero factor)
  __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  e = _mm256_max_epi32(e, _mm256_setzero_si256());
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

inline float dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = hsum8(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[i] += a * x[i]
inline void axpy(float* y, float a, const float* x, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

// "rotate half" RoPE of one head: out[i] = x[i] cos[i] - x[i + h] sin[i], out[i + h] = x[i + h] cos[i + h]
// + x[i] sin[i + h], h = hd / 2 (the torch reference: x * cos + cat(-x2, x1) * sin).
inline void rope_head(const float* x, const float* cos, const float* sin, int64_t hd, float* out) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    out[i] = x[i] * cos[i] - x[i + h] * sin[i];
    out[i + h] = x[i + h] * cos[i + h] + x[i] * sin[i + h];
  }
}

void check_f32(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "decode ops: ", what,
              " must be a contiguous float32 CPU tensor");
}

at::Tensor add_rms_norm(const std::optional<at::Tensor>& x, at::Tensor& residual, const at::Tensor& weight,
                        double eps) {
  check_f32(residual, "residual");
  check_f32(weight, "weight");
  const int64_t D = residual.size(-1), M = D ? residual.numel() / D : 0;
  TORCH_CHECK(weight.numel() == D, "add_rms_norm: weight has ", weight.numel(), " values, rows have ", D);
  const float* xp = nullptr;
  if (x.has_value() && x->defined()) {
    check_f32(*x, "x");
    TORCH_CHECK(x->numel() == residual.numel(), "add_rms_norm: x and residual differ in size");
    xp = x->data_ptr<float>();
  }
  at::Tensor out = at::empty_like(residual);
  float* r = residual.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m, r += D, o += D) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= D; i += 8) {
      __m256 v = _mm256_loadu_ps(r + i);
      if (xp) {
        v = _mm256_add_ps(v, _mm256_loadu_ps(xp + m * D + i));
        _mm256_storeu_ps(r + i, v);
      }
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum8(acc);
    for (; i < D; ++i) {
      if (xp) r[i] += xp[m * D + i];
      ss += r[i] * r[i];
    }
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + static_cast<float>(eps));
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= D; i += 8) {
      _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(r + i), vinv), _mm256_loadu_ps(w + i)));
    }
    for (; i < D; ++i) o[i] = r[i] * inv * w[i];
  }
  return out;
}

at::Tensor silu_mul(const at::Tensor& x) {
  check_f32(x, "x");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, "silu_mul: the last dimension must be even");
  const int64_t F2 = x.size(-1), F = F2 / 2, M = F2 ? x.numel() / F2 : 0;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = F;
  at::Tensor out = at::empty(shape, x.options());
  const float* xp = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  for (int64_t m = 0; m < M; ++m, xp += F2, o += F) {
    int64_t i = 0;
    for (; i + 8 <= F; i += 8) {
      const __m256 g = _mm256_loadu_ps(xp + i);
      const __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_xor_ps(g, sign))));  // g sigmoid(g)
      _mm256_storeu_ps(o + i, _mm256_mul_ps(s, _mm256_loadu_ps(xp + F + i)));
    }
    for (; i < F; ++i) o[i] = xp[i] / (1.0f + std::exp(-xp[i])) * xp[F + i];
  }
  return out;
}

at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& cos,
                            const at::Tensor& sin, int64_t pos, int64_t n_heads, int64_t n_kv_heads) {
  check_f32(qkv, "qkv");
  check_f32(k_cache, "k_cache");
  check_f32(v_cache, "v_cache");
  check_f32(cos, "cos");
  check_f32(sin, "sin");
  TORCH_CHECK(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0,
              "decode_attention: n_heads must be a positive multiple of n_kv_heads");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes() && k_cache.size(1) == n_kv_heads,
              "decode_attention: caches must both be (B, n_kv_heads, L, hd)");
  const int64_t Bc = k_cache.size(0), L = k_cache.size(2), hd = k_cache.size(3);
  const int64_t H = n_heads, Hkv = n_kv_heads, group = H / Hkv, width = (H + 2 * Hkv) * hd;
  TORCH_CHECK(hd % 2 == 0, "decode_attention: head width must be even");
  TORCH_CHECK(qkv.size(-1) == width && qkv.numel() % width == 0, "decode_attention: qkv rows must hold ",
              width, " values");
  const int64_t B = qkv.numel() / width;  // one new position per sequence
  TORCH_CHECK(B <= Bc, "decode_attention: ", B, " sequences but the cache holds ", Bc);
  TORCH_CHECK(pos >= 0 && pos < L, "decode_attention: position ", pos, " outside the cache of ", L);
  TORCH_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes() && cos.size(1) == hd && pos < cos.size(0),
              "decode_attention: cos/sin must be (>= pos + 1, hd) tables");
  const float* c = cos.data_ptr<float>() + pos * hd;
  const float* s = sin.data_ptr<float>() + pos * hd;
  const float* in = qkv.data_ptr<float>();
  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  // the new key (rotated) and value of every sequence and kv head go to row ``pos`` first
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < Hkv; ++g) {
      const int64_t row = ((b * Hkv + g) * L + pos) * hd;
      rope_head(in + b * width + (H + g) * hd, c, s, hd, kc + row);
      std::copy_n(in + b * width + (H + Hkv + g) * hd, hd, vc + row);
    }
  }
  at::Tensor out = at::empty({B, 1, H * hd}, qkv.options());
  float* o = out.data_ptr<float>();
  const int64_t S = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // fork only when each head has enough work to pay for it (~50k multiply-adds in all)
  const int64_t grain = S * hd * B * H >= 65536 ? 1 : B * H;
  at::parallel_for(0, B * H, grain, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(S + hd));
    float* sc = buf.data();
    float* q = sc + S;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H;
      rope_head(in + b * width + h * hd, c, s, hd, q);
      const float* K = kc + (b * Hkv + h / group) * L * hd;
      const float* V = vc + (b * Hkv + h / group) * L * hd;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < S; ++j) {
        sc[j] = dot(q, K + j * hd, hd) * scale;
        mx = std::max(mx, sc[j]);
      }
      float total = 0.0f;
      int64_t j = 0;
      const __m256 vmx = _mm256_set1_ps(mx);
      __m256 vt = _mm256_setzero_ps();
      for (; j + 8 <= S; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), vmx));
        _mm256_storeu_ps(sc + j, e);
        vt = _mm256_add_ps(vt, e);
      }
      total = hsum8(vt);
      for (; j < S; ++j) total += (sc[j] = std::exp(sc[j] - mx));
      float* y = o + b * H * hd + h * hd;
      std::fill_n(y, hd, 0.0f);
      const float inv = 1.0f / total;
      for (j = 0; j < S; ++j) axpy(y, sc[j] * inv, V + j * hd, hd);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(arrowdiff_q4avx2, m) {
  m.def("add_rms_norm(Tensor? x, Tensor(a!) residual, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul(Tensor x) -> Tensor");
  m.def(
      "decode_attention(Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor cos, Tensor sin, int pos, "
      "int n_heads, int n_kv_heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(arrowdiff_q4avx2, CPU, m) {
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("silu_mul", &silu_mul);
  m.impl("decode_attention", &decode_attention);
}
