/* Fused pairwise attention of the item-similarity family (eq. 3-8), forward and backward.
 *
 * For row b (a user) and target t (item j = items[b,t]) over the user's history l < hlen[b]:
 *   valid_l = hist[b,l] != j                                   (eq. 5: R_u+ \ {j})
 *   pre_l   = A[b,l] + C[b,t]                          (ADD:  W1 x_i + W2 x_j + b, eq. 4/6)
 *           = W (p_l * q_t) + bias                     (PROD: NAIS prod)
 *   e_l     = hv . relu(pre_l)
 *   a_l     = exp(e_l - beta * logsumexp_valid(e))     (smoothed softmax, eq. 4)
 *   score   = n^-alpha * sum_valid a_l (p_l . q_t)     (eq. 5), 0 when no valid l
 * Nothing of size [T x L x H] is ever stored: each (b,t) row lives in per-call scratch.
 * Compiled at first use by mmiris/models/fused.py; rows [b0, b1) per call so Python threads
 * can split a batch (ctypes releases the GIL).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef long long i64;

#define INLINE static inline __attribute__((always_inline))

INLINE float relu_dot(const float *pre, const float *hv, int H) {
    float e = 0.f;
    for (int d = 0; d < H; d++) e += hv[d] * (pre[d] > 0.f ? pre[d] : 0.f);
    return e;
}

INLINE float dotk(const float *x, const float *y, int K) {
    float s = 0.f;
    for (int k = 0; k < K; k++) s += x[k] * y[k];
    return s;
}

/* pre = A_l + c  (ADD)  or  bias + sum_k p[k] * WqT[k,:]  (PROD, WqT[k,d] = W[d,k] q[k]) */
INLINE void pre_add(float *pre, const float *a, const float *c, int H) {
    for (int d = 0; d < H; d++) pre[d] = a[d] + c[d];
}

INLINE void pre_prod(float *pre, const float *p, const float *WqT, const float *bias, int K, int H) {
    for (int d = 0; d < H; d++) pre[d] = bias[d];
    for (int k = 0; k < K; k++) {
        const float pk = p[k];
        const float *w = WqT + (i64)k * H;
        for (int d = 0; d < H; d++) pre[d] += pk * w[d];
    }
}

INLINE void build_wq(float *WqT, const float *W, const float *q, int K, int H) {
    for (int k = 0; k < K; k++)
        for (int d = 0; d < H; d++) WqT[(i64)k * H + d] = W[(i64)d * K + k] * q[k];
}

/* Pass shared by forward and backward: e_l, pq_l and validity for one (b, t); returns count. */
INLINE int row_logits(int mode, int n_l, const i64 *hb, i64 j, const float *Pb, const float *q,
                      const float *Ab, const float *c, const float *WqT, const float *bias,
                      const float *hv, int K, int H, float *e, float *pq, unsigned char *ok,
                      float *pre, int keep_pre, float *emax) {
    int cnt = 0;
    float m = -3.0e38f;
    for (int l = 0; l < n_l; l++) {
        ok[l] = hb[l] != j;
        if (!ok[l]) continue;
        float *pr = keep_pre ? pre + (i64)l * H : pre;
        const float *p = Pb + (i64)l * K;
        if (mode == 0) pre_add(pr, Ab + (i64)l * H, c, H);
        else pre_prod(pr, p, WqT, bias, K, H);
        const float ev = relu_dot(pr, hv, H);
        e[l] = ev;
        pq[l] = dotk(p, q, K);
        if (ev > m) m = ev;
        cnt++;
    }
    *emax = m;
    return cnt;
}

INLINE void forward_rows(int mode, i64 b0, i64 b1, i64 t0, i64 t1, i64 T, i64 L, int K, int H,
                         const float *PH, const float *QT, const i64 *hist, const i64 *hlen,
                         const i64 *items, const float *A, const float *C, const float *W,
                         const float *bias, const float *hv, float beta, float alpha,
                         float *score, float *lse_out) {
    float *e = malloc(sizeof(float) * (L + 1)), *pq = malloc(sizeof(float) * (L + 1));
    float *pre = malloc(sizeof(float) * H), *WqT = malloc(sizeof(float) * K * H);
    unsigned char *ok = malloc(L + 1);
    for (i64 b = b0; b < b1; b++) {
        const int n_l = (int)hlen[b];
        const i64 *hb = hist + b * L;
        const float *Pb = PH + b * L * K;
        const float *Ab = mode == 0 ? A + b * L * H : 0;
        for (i64 t = t0; t < t1; t++) {
            const i64 bt = b * T + t;
            const float *q = QT + bt * K;
            if (mode == 1) build_wq(WqT, W, q, K, H);
            float m;
            const int cnt = row_logits(mode, n_l, hb, items[bt], Pb, q, Ab, mode == 0 ? C + bt * H : 0,
                                       WqT, bias, hv, K, H, e, pq, ok, pre, 0, &m);
            if (cnt == 0) { score[bt] = 0.f; lse_out[bt] = 0.f; continue; }
            float S = 0.f;
            for (int l = 0; l < n_l; l++) S += ok[l] ? expf(e[l] - m) : 0.f;
            const float lse = m + logf(S), shift = beta * lse;
            float s = 0.f;
            for (int l = 0; l < n_l; l++) s += ok[l] ? expf(e[l] - shift) * pq[l] : 0.f;
            const float coef = alpha == 0.f ? 1.f : powf((float)cnt, -alpha);
            score[bt] = coef * s;
            lse_out[bt] = lse;
        }
    }
    free(e); free(pq); free(pre); free(WqT); free(ok);
}

INLINE void backward_rows(int mode, i64 b0, i64 b1, i64 T, i64 L, int K, int H,
                          const float *PH, const float *QT, const i64 *hist, const i64 *hlen,
                          const i64 *items, const float *A, const float *C, const float *W,
                          const float *bias, const float *hv, float beta, float alpha,
                          const float *gscore, const float *lse_in,
                          float *dPH, float *dQT, float *dA, float *dC, float *dW, float *dbias,
                          float *dhv) {
    float *e = malloc(sizeof(float) * (L + 1)), *pq = malloc(sizeof(float) * (L + 1));
    float *pre = malloc(sizeof(float) * (L + 1) * H), *WqT = malloc(sizeof(float) * K * H);
    float *dWqT = malloc(sizeof(float) * K * H), *dq = malloc(sizeof(float) * K);
    float *dc = malloc(sizeof(float) * H), *dpre = malloc(sizeof(float) * H);
    unsigned char *ok = malloc(L + 1);
    for (i64 b = b0; b < b1; b++) {
        const int n_l = (int)hlen[b];
        const i64 *hb = hist + b * L;
        const float *Pb = PH + b * L * K;
        float *dPb = dPH + b * L * K;
        const float *Ab = mode == 0 ? A + b * L * H : 0;
        float *dAb = mode == 0 ? dA + b * L * H : 0;
        for (i64 t = 0; t < T; t++) {
            const i64 bt = b * T + t;
            const float g = gscore[bt];
            if (g == 0.f) continue;
            const float *q = QT + bt * K;
            if (mode == 1) build_wq(WqT, W, q, K, H);
            float m;
            const int cnt = row_logits(mode, n_l, hb, items[bt], Pb, q, Ab, mode == 0 ? C + bt * H : 0,
                                       WqT, bias, hv, K, H, e, pq, ok, pre, 1, &m);
            if (cnt == 0) continue;
            const float lse = lse_in[bt], shift = beta * lse;
            const float gc = g * (alpha == 0.f ? 1.f : powf((float)cnt, -alpha));
            /* a_l and softmax_l overwrite e and pq is kept: s_ad = sum a_l * da_l, da_l = gc pq_l */
            float s_ad = 0.f;
            for (int l = 0; l < n_l; l++) {
                if (!ok[l]) continue;
                const float a = expf(e[l] - shift);
                s_ad += a * gc * pq[l];
            }
            memset(dq, 0, sizeof(float) * K);
            memset(dc, 0, sizeof(float) * H);
            if (mode == 1) memset(dWqT, 0, sizeof(float) * K * H);
            for (int l = 0; l < n_l; l++) {
                if (!ok[l]) continue;
                const float a = expf(e[l] - shift), sm = expf(e[l] - lse);
                const float ga = gc * a;
                const float *p = Pb + (i64)l * K;
                float *dp = dPb + (i64)l * K;
                for (int k = 0; k < K; k++) { dp[k] += ga * q[k]; dq[k] += ga * p[k]; }
                const float de = a * gc * pq[l] - beta * sm * s_ad;
                const float *pr = pre + (i64)l * H;
                for (int d = 0; d < H; d++) {
                    const float r = pr[d] > 0.f ? pr[d] : 0.f;
                    dhv[d] += de * r;
                    dpre[d] = pr[d] > 0.f ? de * hv[d] : 0.f;
                }
                if (mode == 0) {
                    float *da = dAb + (i64)l * H;
                    for (int d = 0; d < H; d++) { da[d] += dpre[d]; dc[d] += dpre[d]; }
                } else {
                    for (int d = 0; d < H; d++) dc[d] += dpre[d];
                    for (int k = 0; k < K; k++) {
                        const float pk = p[k];
                        float *dw = dWqT + (i64)k * H;
                        const float *w = WqT + (i64)k * H;
                        float s = 0.f;
                        for (int d = 0; d < H; d++) { dw[d] += pk * dpre[d]; s += w[d] * dpre[d]; }
                        dp[k] += s;
                    }
                }
            }
            float *dqt = dQT + bt * K;
            for (int k = 0; k < K; k++) dqt[k] += dq[k];
            if (mode == 0) {
                float *dct = dC + bt * H;
                for (int d = 0; d < H; d++) dct[d] += dc[d];
            } else {
                for (int d = 0; d < H; d++) dbias[d] += dc[d];
                for (int k = 0; k < K; k++) {
                    const float *dw = dWqT + (i64)k * H;
                    float s = 0.f;
                    for (int d = 0; d < H; d++) {
                        dW[(i64)d * K + k] += dw[d] * q[k];
                        s += dw[d] * W[(i64)d * K + k];
                    }
                    dqt[k] += s;
                }
            }
        }
    }
    free(e); free(pq); free(pre); free(WqT); free(dWqT); free(dq); free(dc); free(dpre); free(ok);
}

/* Specialise the hot loops for common (K, H) so the compiler keeps a row in registers. */
#define DISPATCH(CALL)                                                      \
    if (K == 16 && H == 16) { const int K_ = 16, H_ = 16; CALL; }            \
    else if (K == 64 && H == 16) { const int K_ = 64, H_ = 16; CALL; }       \
    else if (K == 32 && H == 16) { const int K_ = 32, H_ = 16; CALL; }       \
    else if (K == 64 && H == 64) { const int K_ = 64, H_ = 64; CALL; }       \
    else if (K == 32 && H == 32) { const int K_ = 32, H_ = 32; CALL; }       \
    else if (K == 8 && H == 8) { const int K_ = 8, H_ = 8; CALL; }           \
    else { const int K_ = K, H_ = H; CALL; }

void attentive_sum_forward(int mode, i64 b0, i64 b1, i64 t0, i64 t1, i64 T, i64 L, int K, int H,
                           const float *PH, const float *QT, const i64 *hist, const i64 *hlen,
                           const i64 *items, const float *A, const float *C, const float *W,
                           const float *bias, const float *hv, float beta, float alpha,
                           float *score, float *lse_out) {
    DISPATCH(forward_rows(mode, b0, b1, t0, t1, T, L, K_, H_, PH, QT, hist, hlen, items, A, C, W, bias, hv,
                          beta, alpha, score, lse_out))
}

void attentive_sum_backward(int mode, i64 b0, i64 b1, i64 T, i64 L, int K, int H,
                            const float *PH, const float *QT, const i64 *hist, const i64 *hlen,
                            const i64 *items, const float *A, const float *C, const float *W,
                            const float *bias, const float *hv, float beta, float alpha,
                            const float *gscore, const float *lse_in, float *dPH, float *dQT,
                            float *dA, float *dC, float *dW, float *dbias, float *dhv) {
    DISPATCH(backward_rows(mode, b0, b1, T, L, K_, H_, PH, QT, hist, hlen, items, A, C, W, bias, hv,
                           beta, alpha, gscore, lse_in, dPH, dQT, dA, dC, dW, dbias, dhv))
}
