/* Fused pairwise attention of the item-similarity family (eq. 3-8), forward and backward.
 *
 * For row b (a user) and target t (item j = items[b,t]) over the user's history l < hlen[b]:
 *   valid_l = hist[b,l] != j                                   (eq. 5: R_u+ \ {j})
 *   pre_l   = A[b,:,l] + C[b,t]                        (ADD:  W1 x_i + W2 x_j + b, eq. 4/6)
 *           = W (p_l * q_t) + bias                     (PROD: NAIS prod)
 *   e_l     = hv . relu(pre_l)
 *   a_l     = exp(e_l - beta * logsumexp_valid(e))     (smoothed softmax, eq. 4)
 *   score   = n^-alpha * sum_valid a_l (p_l . q_t)     (eq. 5), 0 when no valid l
 *
 * History-side inputs are transposed, [B, K, L] and [B, H, L], with L a multiple of LB, so
 * every loop runs over l in vectors (16 floats with AVX-512, 8 with AVX2); W (p*q) is computed as (W diag(q_t)) p_l, with
 * W diag(q_t) built once per target. Nothing of size [T x L x H] is stored: a (b, t) row
 * lives in per-call scratch. Compiled at first use by mmiris/models/kernels/__init__.py with
 * -fopenmp: the library then shares torch's OpenMP runtime (same soname), so its threads do
 * not fight torch's spinning workers for the cores.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef long long i64;
/* VW floats per vector: 16 (one zmm register) where the compiler targets AVX-512, else 8
 * (AVX2 ymm); every loop over the history runs VW items at a time. */
#if defined(__AVX512F__)
#define VW 16
#else
#define VW 8
#endif
typedef float v8 __attribute__((vector_size(4 * VW)));
typedef float v8u __attribute__((vector_size(4 * VW), aligned(4)));
typedef int v8i __attribute__((vector_size(4 * VW)));

#define INLINE static inline __attribute__((always_inline))
#define LD(p) (*(const v8u *)(p))
#define ST(p, v) (*(v8u *)(p) = (v))
#define LB 32          /* history block; L (the stride) is a multiple of it */
#define NEG (-1.0e30f) /* logit of an excluded or padded slot: exp() underflows to 0 */

INLINE v8 splat(float x) { return x - (v8){0}; } /* scalar - vector broadcasts */
INLINE v8 relu8(v8 x) { return (v8)((v8i)x & (x > splat(0.f))); }
INLINE v8 mask_pos(v8 x, v8 y) { return (v8)((v8i)y & (x > splat(0.f))); } /* x > 0 ? y : 0 */
INLINE float hsum(v8 x) {
    float s = 0.f;
    for (int i = 0; i < VW; i++) s += x[i];
    return s;
}
INLINE i64 roundup(i64 n) { return (n + LB - 1) / LB * LB; }

/* e[l] = hv . relu(AT[:,l] + c) for l < nX */
INLINE void logits_add(float *e, const float *AT, i64 L, const float *c, const float *hv, int H, i64 nX) {
    for (i64 l0 = 0; l0 < nX; l0 += LB) {
        v8 acc[LB / VW] = {0};
        for (int d = 0; d < H; d++) {
            const float *a = AT + d * L + l0;
            const v8 cd = splat(c[d]), hd = splat(hv[d]);
            for (int i = 0; i < LB / VW; i++) acc[i] += hd * relu8(LD(a + VW * i) + cd);
        }
        for (int i = 0; i < LB / VW; i++) ST(e + l0 + VW * i, acc[i]);
    }
}

/* Rows of W (attention units d) per register block: 8 with AVX-512's 32 vector registers
 * (16 accumulators), 4 with AVX2's 16. */
#define DBLK(H) ((VW == 16 && (H) % 8 == 0) ? 8 : 4)

/* pre[d][l] = bias[d] + sum_k WqT[k][d] PT[k][l]; e[l] = hv . relu(pre[:,l]); pre kept if asked */
INLINE void logits_prod(float *e, float *pre, const float *PT, i64 L, const float *WqT,
                        const float *bias, const float *hv, int K, int H, i64 nX) {
    const int DB = DBLK(H);
    for (i64 l0 = 0; l0 < nX; l0 += 2 * VW) {
        v8 e0 = splat(0.f), e1 = splat(0.f);
        for (int d0 = 0; d0 < H; d0 += DB) {
            v8 acc[8][2];
            for (int dd = 0; dd < DB; dd++) acc[dd][0] = acc[dd][1] = splat(bias[d0 + dd]);
            for (int k = 0; k < K; k++) {
                const v8 p0 = LD(PT + k * L + l0), p1 = LD(PT + k * L + l0 + VW);
                const float *w = WqT + k * H + d0;
                for (int dd = 0; dd < DB; dd++) {
                    const v8 wv = splat(w[dd]);
                    acc[dd][0] += wv * p0;
                    acc[dd][1] += wv * p1;
                }
            }
            for (int dd = 0; dd < DB; dd++) {
                const v8 hd = splat(hv[d0 + dd]);
                e0 += hd * relu8(acc[dd][0]);
                e1 += hd * relu8(acc[dd][1]);
                if (pre) {
                    ST(pre + (i64)(d0 + dd) * L + l0, acc[dd][0]);
                    ST(pre + (i64)(d0 + dd) * L + l0 + VW, acc[dd][1]);
                }
            }
        }
        ST(e + l0, e0);
        ST(e + l0 + VW, e1);
    }
}

/* pq[l] = p_l . q */
INLINE void dots(float *pq, const float *PT, i64 L, const float *q, int K, i64 nX) {
    for (i64 l0 = 0; l0 < nX; l0 += LB) {
        v8 acc[LB / VW] = {0};
        for (int k = 0; k < K; k++) {
            const v8 qk = splat(q[k]);
            for (int i = 0; i < LB / VW; i++) acc[i] += qk * LD(PT + k * L + l0 + VW * i);
        }
        for (int i = 0; i < LB / VW; i++) ST(pq + l0 + VW * i, acc[i]);
    }
}

/* Exclude j and the padding; return the number of valid history items. */
INLINE int exclude(float *e, const i64 *hb, int n_l, i64 j, i64 nX) {
    int hits = 0; /* branch-free so it vectorises: j is in a history at most once or twice */
    for (int l = 0; l < n_l; l++) {
        const int hit = hb[l] == j;
        hits += hit;
        e[l] = hit ? NEG : e[l];
    }
    for (i64 l = n_l; l < nX; l++) e[l] = NEG;
    return n_l - hits;
}

INLINE void build_wq(float *WqT, const float *W, const float *q, int K, int H) {
    for (int k = 0; k < K; k++)
        for (int d = 0; d < H; d++) WqT[k * H + d] = W[d * K + k] * q[k];
}

INLINE float vmax(const float *e, i64 n) {
    float m = -3.0e38f;
    for (i64 l = 0; l < n; l++) m = e[l] > m ? e[l] : m;
    return m;
}

static void *scratch(size_t n) { return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64); }

INLINE void forward_rows(int mode, int shared, i64 b0, i64 b1, i64 t0, i64 t1, i64 T, i64 L, int K, int H,
                         const float *PT, const float *QT, const i64 *hist, const i64 *hlen,
                         const i64 *items, const float *AT, const float *C, const float *W,
                         const float *bias, const float *hv, float beta, float alpha,
                         float *score, float *lse_out) {
    float *e = scratch(L), *pq = scratch(L), *WqT = scratch((size_t)K * H);
    for (i64 b = b0; b < b1; b++) {
        const int n_l = (int)hlen[b];
        const i64 nX = roundup(n_l);
        const i64 *hb = hist + b * L;
        const float *Pb = PT + b * K * L;
        for (i64 t = t0; t < t1; t++) {
            const i64 bt = b * T + t, bq = shared ? t : bt; /* shared: one target list for all rows */
            const float *q = QT + bq * K;
            if (mode == 0) logits_add(e, AT + b * H * L, L, C + bq * H, hv, H, nX);
            else { build_wq(WqT, W, q, K, H); logits_prod(e, 0, Pb, L, WqT, bias, hv, K, H, nX); }
            const int cnt = exclude(e, hb, n_l, items[bq], nX);
            if (cnt <= 0) { score[bt] = 0.f; lse_out[bt] = 0.f; continue; }
            dots(pq, Pb, L, q, K, nX);
            const float m = vmax(e, nX);
            /* one exp per pair: x_l = exp(e_l - m); a_l = x_l exp(m - beta lse) */
            float S = 0.f, xs = 0.f;
            for (i64 l = 0; l < nX; l++) { const float x = expf(e[l] - m); S += x; xs += x * pq[l]; }
            const float lse = m + logf(S);
            const float coef = alpha == 0.f ? 1.f : powf((float)cnt, -alpha);
            score[bt] = coef * expf(m - beta * lse) * xs;
            lse_out[bt] = lse;
        }
    }
    free(e); free(pq); free(WqT);
}

INLINE void backward_rows(int mode, i64 b0, i64 b1, i64 T, i64 L, int K, int H,
                          const float *PT, const float *QT, const i64 *hist, const i64 *hlen,
                          const i64 *items, const float *AT, const float *C, const float *W,
                          const float *bias, const float *hv, float beta, float alpha,
                          const float *gscore, const float *lse_in,
                          float *dPT, float *dQT, float *dAT, float *dC, float *dW, float *dbias,
                          float *dhv) {
    /* history-embedding rows per register block in PROD's backward (2 x KB in dP); 4 measured
     * slower than 2 with AVX-512 (more accumulators than the loads can feed) */
#define KB 2
    float *e = scratch(L), *pq = scratch(L), *ga = scratch(L), *de = scratch(L);
    float *pre = mode == 1 ? scratch((size_t)H * L) : 0;
    float *WqT = scratch((size_t)K * H), *dWqT = scratch((size_t)K * H);
    for (i64 b = b0; b < b1; b++) {
        const int n_l = (int)hlen[b];
        const i64 nX = roundup(n_l);
        const i64 *hb = hist + b * L;
        const float *Pb = PT + b * K * L;
        float *dPb = dPT + b * K * L;
        const float *Ab = mode == 0 ? AT + b * H * L : 0;
        float *dAb = mode == 0 ? dAT + b * H * L : 0;
        for (i64 t = 0; t < T; t++) {
            const i64 bt = b * T + t;
            const float g = gscore[bt];
            if (g == 0.f) continue;
            const float *q = QT + bt * K;
            const float *c = mode == 0 ? C + bt * H : 0;
            if (mode == 0) logits_add(e, Ab, L, c, hv, H, nX);
            else { build_wq(WqT, W, q, K, H); logits_prod(e, pre, Pb, L, WqT, bias, hv, K, H, nX); }
            const int cnt = exclude(e, hb, n_l, items[bt], nX);
            if (cnt <= 0) continue;
            dots(pq, Pb, L, q, K, nX);
            const float lse = lse_in[bt], shift = beta * lse;
            const float gc = g * (alpha == 0.f ? 1.f : powf((float)cnt, -alpha));
            /* ga = gc a, s_ad = sum_l a da with da = gc pq; de = a da - beta softmax s_ad */
            /* softmax_l = exp(e_l - lse) = a_l exp((beta - 1) lse): one exp per pair */
            float s_ad = 0.f;
            for (i64 l = 0; l < nX; l++) { ga[l] = gc * expf(e[l] - shift); s_ad += ga[l] * pq[l]; }
            const float sm_scale = beta * s_ad * expf((beta - 1.f) * lse) / gc;
            for (i64 l = 0; l < nX; l++) de[l] = ga[l] * (pq[l] - sm_scale);
            /* d(p_l . q): dP[k][l] += ga[l] q[k]; dq[k] = sum_l ga[l] P[k][l] */
            float *dqt = dQT + bt * K;
            for (int k0 = 0; k0 < K; k0 += 4) {
                v8 acc[4] = {0};
                for (i64 l0 = 0; l0 < nX; l0 += VW) {
                    const v8 gv = LD(ga + l0);
                    for (int kk = 0; kk < 4; kk++) {
                        const i64 o = (i64)(k0 + kk) * L + l0;
                        acc[kk] += gv * LD(Pb + o);
                        if (mode == 0) ST(dPb + o, LD(dPb + o) + gv * splat(q[k0 + kk]));  /* PROD: below */
                    }
                }
                for (int kk = 0; kk < 4; kk++) dqt[k0 + kk] += hsum(acc[kk]);
            }
            if (mode == 0) {
                /* dpre = (pre > 0) de hv; dA += dpre; dc = sum_l dpre; dhv += sum_l de relu(pre) */
                float *dct = dC + bt * H;
                for (int d0 = 0; d0 < H; d0 += 4) {
                    v8 sc[4] = {0}, sh[4] = {0};
                    for (i64 l0 = 0; l0 < nX; l0 += VW) {
                        const v8 dv = LD(de + l0);
                        for (int dd = 0; dd < 4; dd++) {
                            const int d = d0 + dd;
                            const v8 x = LD(Ab + (i64)d * L + l0) + splat(c[d]);
                            const v8 dp = mask_pos(x, dv * splat(hv[d]));
                            sh[dd] += dv * relu8(x);
                            sc[dd] += dp;
                            float *da = dAb + (i64)d * L + l0;
                            ST(da, LD(da) + dp);
                        }
                    }
                    for (int dd = 0; dd < 4; dd++) { dct[d0 + dd] += hsum(sc[dd]); dhv[d0 + dd] += hsum(sh[dd]); }
                }
            } else {
                /* dpre in place of pre; dhv, dbias as sums over l */
                for (int d0 = 0; d0 < H; d0 += 4) {
                    v8 sb[4] = {0}, sh[4] = {0};
                    for (i64 l0 = 0; l0 < nX; l0 += VW) {
                        const v8 dv = LD(de + l0);
                        for (int dd = 0; dd < 4; dd++) {
                            float *pr = pre + (i64)(d0 + dd) * L + l0;
                            const v8 x = LD(pr);
                            const v8 dp = mask_pos(x, dv * splat(hv[d0 + dd]));
                            sh[dd] += dv * relu8(x);
                            sb[dd] += dp;
                            ST(pr, dp);
                        }
                    }
                    for (int dd = 0; dd < 4; dd++) { dbias[d0 + dd] += hsum(sb[dd]); dhv[d0 + dd] += hsum(sh[dd]); }
                }
                /* dWqT[k][d] = sum_l P[k][l] dpre[d][l]  (blocks of KB k x 4 d) */
                for (int k0 = 0; k0 < K; k0 += KB) {
                    for (int d0 = 0; d0 < H; d0 += 4) {
                        v8 acc[KB][4] = {0};
                        for (i64 l0 = 0; l0 < nX; l0 += VW) {
                            v8 pv[KB];
                            for (int kk = 0; kk < KB; kk++) pv[kk] = LD(Pb + (i64)(k0 + kk) * L + l0);
                            for (int dd = 0; dd < 4; dd++) {
                                const v8 dp = LD(pre + (i64)(d0 + dd) * L + l0);
                                for (int kk = 0; kk < KB; kk++) acc[kk][dd] += pv[kk] * dp;
                            }
                        }
                        for (int kk = 0; kk < KB; kk++)
                            for (int dd = 0; dd < 4; dd++) dWqT[(k0 + kk) * H + d0 + dd] = hsum(acc[kk][dd]);
                    }
                }
                /* dP[k][l] += ga[l] q[k] + sum_d WqT[k][d] dpre[d][l]  (blocks of 2 KB k x 2 VW l) */
                for (i64 l0 = 0; l0 < nX; l0 += 2 * VW) {
                    const v8 g0 = LD(ga + l0), g1 = LD(ga + l0 + VW);
                    for (int k0 = 0; k0 < K; k0 += 2 * KB) {
                        v8 acc[2 * KB][2];
                        for (int kk = 0; kk < 2 * KB; kk++) {
                            const v8 qk = splat(q[k0 + kk]);
                            acc[kk][0] = LD(dPb + (i64)(k0 + kk) * L + l0) + g0 * qk;
                            acc[kk][1] = LD(dPb + (i64)(k0 + kk) * L + l0 + VW) + g1 * qk;
                        }
                        for (int d = 0; d < H; d++) {
                            const v8 d0v = LD(pre + (i64)d * L + l0), d1v = LD(pre + (i64)d * L + l0 + VW);
                            for (int kk = 0; kk < 2 * KB; kk++) {
                                const v8 w = splat(WqT[(k0 + kk) * H + d]);
                                acc[kk][0] += w * d0v;
                                acc[kk][1] += w * d1v;
                            }
                        }
                        for (int kk = 0; kk < 2 * KB; kk++) {
                            ST(dPb + (i64)(k0 + kk) * L + l0, acc[kk][0]);
                            ST(dPb + (i64)(k0 + kk) * L + l0 + VW, acc[kk][1]);
                        }
                    }
                }
                /* WqT = W diag(q): dW[d][k] += dWqT[k][d] q[k]; dq[k] += sum_d dWqT[k][d] W[d][k] */
                for (int k = 0; k < K; k++) {
                    float s = 0.f;
                    for (int d = 0; d < H; d++) {
                        dW[d * K + k] += dWqT[k * H + d] * q[k];
                        s += dWqT[k * H + d] * W[d * K + k];
                    }
                    dqt[k] += s;
                }
            }
        }
    }
    free(e); free(pq); free(ga); free(de); free(WqT); free(dWqT);
    if (pre) free(pre);
}

/* Specialise for common (K, H) so loops over k and d unroll into registers. */
#define DISPATCH(CALL)                                                      \
    if (K == 16 && H == 16) { const int K_ = 16, H_ = 16; CALL; }            \
    else if (K == 64 && H == 16) { const int K_ = 64, H_ = 16; CALL; }       \
    else if (K == 32 && H == 16) { const int K_ = 32, H_ = 16; CALL; }       \
    else if (K == 64 && H == 64) { const int K_ = 64, H_ = 64; CALL; }       \
    else if (K == 8 && H == 8) { const int K_ = 8, H_ = 8; CALL; }           \
    else { const int K_ = K, H_ = H; CALL; }

int attentive_sum_block(void) { return LB; }

int attentive_sum_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* parts[4p..4p+3] = (b0, b1, t0, t1): rows and targets of work item p, run in parallel.
 * mode: bit 0 = ADD (0) / PROD (1); bit 1 = the rows share one target list (QT [T, K],
 * C [T, H], items [T]: scoring the whole catalogue for many users, forward only). */
void attentive_sum_forward(int mode, int n_parts, const i64 *parts, int threads, i64 T, i64 L, int K, int H,
                           const float *PT, const float *QT, const i64 *hist, const i64 *hlen,
                           const i64 *items, const float *AT, const float *C, const float *W,
                           const float *bias, const float *hv, float beta, float alpha,
                           float *score, float *lse_out) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int p = 0; p < n_parts; p++) {
        const i64 b0 = parts[4 * p], b1 = parts[4 * p + 1], t0 = parts[4 * p + 2], t1 = parts[4 * p + 3];
        DISPATCH(forward_rows(mode & 1, mode >> 1, b0, b1, t0, t1, T, L, K_, H_, PT, QT, hist, hlen, items, AT, C, W, bias,
                              hv, beta, alpha, score, lse_out))
    }
}

/* parts[2p..2p+1] = (b0, b1); work item p accumulates dW, dbias, dhv into its own slice p. */
void attentive_sum_backward(int mode, int n_parts, const i64 *parts, int threads, i64 T, i64 L, int K, int H,
                            const float *PT, const float *QT, const i64 *hist, const i64 *hlen,
                            const i64 *items, const float *AT, const float *C, const float *W,
                            const float *bias, const float *hv, float beta, float alpha,
                            const float *gscore, const float *lse_in, float *dPT, float *dQT,
                            float *dAT, float *dC, float *dW, float *dbias, float *dhv) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int p = 0; p < n_parts; p++) {
        const i64 b0 = parts[2 * p], b1 = parts[2 * p + 1];
        float *dWp = dW ? dW + (i64)p * H * K : 0, *dbp = dbias ? dbias + (i64)p * H : 0;
        DISPATCH(backward_rows(mode, b0, b1, T, L, K_, H_, PT, QT, hist, hlen, items, AT, C, W, bias, hv,
                               beta, alpha, gscore, lse_in, dPT, dQT, dAT, dC, dWp, dbp, dhv + (i64)p * H))
    }
}
