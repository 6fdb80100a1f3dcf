/* Fused CPU kernels for the structured cells and the linear recurrences of parallel Newton.
 *
 * native.py builds this file once per floating type (-DREAL=float or double) with the system C
 * compiler at first use. Every function has a torch equivalent (cells.py, scan.py) that the
 * tests compare it with. A cell kernel does in one pass over memory what the torch version does
 * in about 25 elementwise passes; a scan kernel runs the recurrence along time in one pass,
 * vectorized across the state.
 *
 * No -ffast-math: NaN and inf must propagate so the solver can report them. The simd attribute
 * on exp lets gcc call glibc's vector exp (libmvec) all the same. Loops carry no branches, which
 * would stop gcc from vectorizing them.
 *
 * Layouts (row-major, contiguous): states h (nb, T, n), inputs u (nb, T, 3 d), h0 (nb, n).
 * A cell call handles time steps [t0, t1) of nb sequences; the state before step t is h0 when
 * t = 0, else h[t - 1].
 */
typedef REAL real;

__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) double exp(double);

#define EXP(y) _Generic((y), float: expf, double: exp)(y)

static inline real sigmoid(real y) { return (real)1 / ((real)1 + EXP(-y)); }

/* tanh(y) = 2 sigmoid(2 y) - 1: one vector exp, as in cells._tanh. */
static inline real tanh_(real y) { return (real)2 * sigmoid((real)2 * y) - (real)1; }

/* The diagonal GRU of cells.DiagonalGRUCell: r, z, g = a_n h + c_n, n and h - n at one unit. */
#define GRU_GATES                                                                     \
    real hp = p[i];                                                                   \
    real r = sigmoid(ut[i] + a_r[i] * hp);                                            \
    real z = sigmoid(ut[d + i] + a_z[i] * hp);                                        \
    real g = c_n[i] + a_n[i] * hp;                                                    \
    real n = tanh_(ut[2 * d + i] + r * g);                                            \
    real h_minus_n = hp - n;

/* rhs = f(h_{t-1}, u_t) - h_t and, when jac is not NULL, jac = df/dh (diagonal).
 * a = (a_r, a_z, a_n) (3 d); c_n (d); u holds the folded biases (DiagonalGRUCell.preprocess). */
void tn_gru(long nb, long T, long t0, long t1, long d, const real *h0, const real *h, const real *u,
            const real *a, const real *c_n, real *rhs, real *jac) {
    const real *a_r = a, *a_z = a + d, *a_n = a + 2 * d;
    for (long s = 0; s < nb; s++) {
        for (long t = t0; t < t1; t++) {
            const real *restrict p = t ? h + (s * T + t - 1) * d : h0 + s * d;
            const real *restrict ht = h + (s * T + t) * d;
            const real *restrict ut = u + (s * T + t) * 3 * d;
            real *restrict rt = rhs + (s * T + t) * d;
            if (!jac) {
                _Pragma("omp simd")
                for (long i = 0; i < d; i++) {
                    GRU_GATES
                    rt[i] = n + z * h_minus_n - ht[i];
                }
                continue;
            }
            real *restrict jt = jac + (s * T + t) * d;
            _Pragma("omp simd")
            for (long i = 0; i < d; i++) {
                GRU_GATES
                rt[i] = n + z * h_minus_n - ht[i];
                real dn = ((real)1 - n * n) * r * (a_n[i] + ((real)1 - r) * a_r[i] * g);
                real q = dn + z * a_z[i] * h_minus_n;
                jt[i] = z + ((real)1 - z) * q;
            }
        }
    }
}

/* The CIFG LSTM of cells.DiagonalCIFGLSTMCell at one unit, state (c, h) = (p[2i], p[2i+1]). */
#define LSTM_GATES                                                                    \
    real c = p[2 * i], hp = p[2 * i + 1];                                             \
    real f = sigmoid(ut[i] + a_f[i] * hp);                                            \
    real o = sigmoid(ut[d + i] + a_o[i] * hp);                                        \
    real g = tanh_(ut[2 * d + i] + a_g[i] * hp);                                      \
    real c_next = g + f * (c - g);                                                    \
    real tc = tanh_(c_next);

#define LSTM_RESIDUAL                                                                 \
    rt[2 * i] = c_next - ht[2 * i];                                                   \
    rt[2 * i + 1] = o * tc - ht[2 * i + 1];

#define LSTM_JACOBIAN                                                                 \
    real dc_dh = ((real)1 - f) * (((real)1 - g * g) * a_g[i] + f * a_f[i] * (c - g)); \
    real o_sech2 = o * ((real)1 - tc * tc);                                           \
    real dh_dh = o * ((real)1 - o) * a_o[i] * tc + o_sech2 * dc_dh;

/* States interleaved (c_1, h_1, c_2, h_2, ...), n = 2 d. jac_mode 0: no Jacobian; 1: its 2x2
 * blocks (nb, T, d, 2, 2); 2: its diagonal (nb, T, n). */
void tn_lstm(long nb, long T, long t0, long t1, long d, const real *h0, const real *h, const real *u,
             const real *a, real *rhs, real *jac, int jac_mode) {
    const real *a_f = a, *a_o = a + d, *a_g = a + 2 * d;
    const long n = 2 * d;
    for (long s = 0; s < nb; s++) {
        for (long t = t0; t < t1; t++) {
            const real *restrict p = t ? h + (s * T + t - 1) * n : h0 + s * n;
            const real *restrict ht = h + (s * T + t) * n;
            const real *restrict ut = u + (s * T + t) * 3 * d;
            real *restrict rt = rhs + (s * T + t) * n;
            if (jac_mode == 0) {
                _Pragma("omp simd")
                for (long i = 0; i < d; i++) {
                    LSTM_GATES
                    LSTM_RESIDUAL
                }
            } else if (jac_mode == 1) {
                real *restrict jt = jac + (s * T + t) * 4 * d;
                _Pragma("omp simd")
                for (long i = 0; i < d; i++) {
                    LSTM_GATES
                    LSTM_RESIDUAL
                    LSTM_JACOBIAN
                    jt[4 * i] = f;
                    jt[4 * i + 1] = dc_dh;
                    jt[4 * i + 2] = o_sech2 * f;
                    jt[4 * i + 3] = dh_dh;
                }
            } else {
                real *restrict jt = jac + (s * T + t) * n;
                _Pragma("omp simd")
                for (long i = 0; i < d; i++) {
                    LSTM_GATES
                    LSTM_RESIDUAL
                    LSTM_JACOBIAN
                    jt[2 * i] = f;
                    jt[2 * i + 1] = dh_dh;
                }
            }
        }
    }
}

/* out_t = A_t * out_{t-1} + b_t with diagonal A, entries [lo, hi) of each row of n. out may be
 * b (each entry is read before it is written), so b and out are not restrict. */
void tn_scan_diagonal(long nb, long T, long n, long lo, long hi, const real *A, const real *b,
                      const real *h0, real *out) {
    for (long s = 0; s < nb; s++) {
        const real *prev = h0 + s * n;
        for (long t = 0; t < T; t++) {
            long row = (s * T + t) * n;
            const real *restrict At = A + row, *bt = b + row, *pt = prev;
            real *ot = out + row;
            _Pragma("omp simd")
            for (long i = lo; i < hi; i++) ot[i] = At[i] * pt[i] + bt[i];
            prev = ot;
        }
    }
}

/* out_t = A_t out_{t-1} + b_t with A_t block diagonal of 2x2 blocks (nb, T, n/2, 2, 2), blocks
 * [lo, hi) of each row. out may be b. */
void tn_scan_block2(long nb, long T, long n, long lo, long hi, const real *A, const real *b,
                    const real *h0, real *out) {
    for (long s = 0; s < nb; s++) {
        const real *prev = h0 + s * n;
        for (long t = 0; t < T; t++) {
            long row = (s * T + t) * n;
            const real *restrict At = A + 2 * row, *bt = b + row, *pt = prev;
            real *ot = out + row;
            _Pragma("omp simd")
            for (long i = lo; i < hi; i++) {
                real p0 = pt[2 * i], p1 = pt[2 * i + 1];
                ot[2 * i] = At[4 * i] * p0 + At[4 * i + 1] * p1 + bt[2 * i];
                ot[2 * i + 1] = At[4 * i + 2] * p0 + At[4 * i + 3] * p1 + bt[2 * i + 1];
            }
            prev = ot;
        }
    }
}

/* out_t = A_t out_{t-1} + b_t with dense d x d matrices A_t: row i of A_t of sequence s is the d
 * entries at R[i] + s * sa + t * st. The blocked dense Newton step (dense.py) passes the d
 * separate (nb * T, d) results of d vector-Jacobian products where autograd left them (st = d);
 * a contiguous (nb, T, d, d) A is R[i] = A + i d, st = d^2. b and out have rows of d, sequence
 * stride sb; out may be b. h0 (nb, d) is the state before step 0. One pass along time, O(d^2)
 * per step: the sequential loop's arithmetic without its per-step interpreter cost. */
void tn_scan_dense(long nb, long T, long d, const real *const *R, long sa, long st, const real *b, long sb,
                   const real *h0, real *out) {
    for (long s = 0; s < nb; s++) {
        const real *prev = h0 + s * d;
        for (long t = 0; t < T; t++) {
            const real *bt = b + s * sb + t * d;
            real *ot = out + s * sb + t * d;
            for (long i = 0; i < d; i++) {
                const real *restrict row = R[i] + s * sa + t * st;
                real acc = bt[i];
                _Pragma("omp simd reduction(+:acc)")
                for (long j = 0; j < d; j++) acc += row[j] * prev[j];
                ot[i] = acc;
            }
            prev = ot;
        }
    }
}

/* Vector-Jacobian products of the cells at the solution, for the implicit backward: given the
 * cotangent lam_t of f(h_{t-1}, u_t), write grad_u_t (3 d per step) and add to acc the gradient
 * of the recurrent parameters (GRU: a_r, a_z, a_n, c_n, 4 d; LSTM: a_f, a_o, a_g, 3 d). acc is
 * double whatever real is: it sums B T terms, too many for float32's 24 bits. */
void tn_gru_vjp(long nb, long T, long t0, long t1, long d, const real *h0, const real *h, const real *u,
                const real *a, const real *c_n, const real *lam, real *grad_u, double *acc) {
    const real *a_r = a, *a_z = a + d, *a_n = a + 2 * d;
    double *restrict g_ar = acc, *restrict g_az = acc + d, *restrict g_an = acc + 2 * d,
           *restrict g_cn = acc + 3 * d;
    for (long s = 0; s < nb; s++) {
        for (long t = t0; t < t1; t++) {
            const real *restrict p = t ? h + (s * T + t - 1) * d : h0 + s * d;
            const real *restrict ut = u + (s * T + t) * 3 * d;
            const real *restrict lt = lam + (s * T + t) * d;
            real *restrict gu = grad_u + (s * T + t) * 3 * d;
            _Pragma("omp simd")
            for (long i = 0; i < d; i++) {
                GRU_GATES
                real g_pre_n = lt[i] * ((real)1 - z) * ((real)1 - n * n);
                real g_pre_r = g_pre_n * g * r * ((real)1 - r);
                real g_pre_z = lt[i] * h_minus_n * z * ((real)1 - z);
                real g_g = g_pre_n * r;
                gu[i] = g_pre_r;
                gu[d + i] = g_pre_z;
                gu[2 * d + i] = g_pre_n;
                g_ar[i] += g_pre_r * hp;
                g_az[i] += g_pre_z * hp;
                g_an[i] += g_g * hp;
                g_cn[i] += g_g;
            }
        }
    }
}

void tn_lstm_vjp(long nb, long T, long t0, long t1, long d, const real *h0, const real *h, const real *u,
                 const real *a, const real *lam, real *grad_u, double *acc) {
    const real *a_f = a, *a_o = a + d, *a_g = a + 2 * d;
    double *restrict g_af = acc, *restrict g_ao = acc + d, *restrict g_ag = acc + 2 * d;
    const long n = 2 * d;
    for (long s = 0; s < nb; s++) {
        for (long t = t0; t < t1; t++) {
            const real *restrict p = t ? h + (s * T + t - 1) * n : h0 + s * n;
            const real *restrict ut = u + (s * T + t) * 3 * d;
            const real *restrict lt = lam + (s * T + t) * n;
            real *restrict gu = grad_u + (s * T + t) * 3 * d;
            _Pragma("omp simd")
            for (long i = 0; i < d; i++) {
                LSTM_GATES
                real g_c = lt[2 * i] + lt[2 * i + 1] * o * ((real)1 - tc * tc);
                real g_pre_f = g_c * (c - g) * f * ((real)1 - f);
                real g_pre_o = lt[2 * i + 1] * tc * o * ((real)1 - o);
                real g_pre_g = g_c * ((real)1 - f) * ((real)1 - g * g);
                gu[i] = g_pre_f;
                gu[d + i] = g_pre_o;
                gu[2 * d + i] = g_pre_g;
                g_af[i] += g_pre_f * hp;
                g_ao[i] += g_pre_o * hp;
                g_ag[i] += g_pre_g * hp;
            }
        }
    }
}
