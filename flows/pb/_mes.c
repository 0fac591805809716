/*
 * flows.pb._mes: one run of the Method of Equal Shares (approval ballots, cost-satisfaction)
 * in certified floating point, for the Add1 completion's many runs.
 *
 * The run either returns the exact MES outcome (the same one exact rational arithmetic and
 * pabutools give) or says "ambiguous" (-1), and the caller then runs the exact engine.
 *
 * Why it cannot differ from exact arithmetic
 * ------------------------------------------
 * Every voter group g carries an interval [lo[g], hi[g]] that contains its exact budget.
 * Every project's exact price q (the per-supporter payment: sum_g w_g min(b_g, q) = cost)
 * and its exact rho = q / cost are enclosed in intervals; a decision is taken only when the
 * intervals prove it, otherwise the whole run is "ambiguous". The only floating-point facts
 * used are those of IEEE 754 binary64 with round-to-nearest and gradual underflow (the C
 * default; this file must not be built with -ffast-math, and is built with
 * -ffp-contract=off). Both are checked before every run (`fp_env_ok`): a process where some
 * other library switched the rounding mode or flush-to-zero gets "ambiguous" throughout.
 *  - +, -, *, / are correctly rounded, so nextafter() of a result towards -inf (+inf) is a
 *    lower (upper) bound on the exact result of the operation on the same operands;
 *  - a sum of n non-negative terms, each a correctly rounded product, in any order, is within
 *    a relative gamma = gamma_{n+1} = (n+1)u / (1 - (n+1)u) of the exact sum S (u = 2^-53), so
 *    S <= computed / (1 - gamma) and S >= computed / (1 + gamma); with e = 2(n+2)u both
 *    1/(1 - gamma) <= 1 + e - 2u and 1/(1 + gamma) >= 1 - e + 2u for n < 2^40, leaving 2u for
 *    rounding 1 +- e and the product, whose last rounding nextafter() covers;
 *  - a rounded subtraction is <= 0 only if the exact difference is <= 0.
 * Group weights and supporter totals are integers below 2^53 (exact in binary64); the
 * caller passes each project's cost as an enclosing interval [clo, chi].
 *
 * Pricing project p: q(b) is non-increasing in every budget, so with lo <= b <= hi,
 * q(hi) <= q(b) <= q(lo). For a float estimate q^ and qa < q^ < qb:
 *  f_lo(qb) = sum w min(lo, qb) >= cost  proves q(lo) <= qb, and
 *  f_hi(qa) = sum w min(hi, qa) <  cost  proves q(hi) >  qa,
 * so qa < q(b) <= qb, and rho is in [qa / chi, qb / clo] (rounded outwards).
 * Affordability (sum w b >= cost) is decided from the bounds on sum w lo and sum w hi.
 * A group with hi == 0 has exactly nothing left. If every other supporter has lo >= qb, each
 * of them pays exactly q, so q = cost / wpos and rho is exactly 1 / wpos (wpos: supporters
 * with money left): such projects tie exactly when their wpos are equal (common: in round one
 * every project's rho is 1 / its number of supporters), and the tie-break rank decides, as in
 * exact arithmetic.
 * The winner is the project whose rho interval lies strictly below every other affordable
 * project's, or, among overlapping candidates whose rho are all exact, the exact minimum of
 * 1/wpos with ties broken by rank; any other overlap is ambiguous.
 * Paying: b' = max(0, b - q) (a voter pays min(b, q)), so lo' = max(0, lo - qb) rounded down
 * and hi' = max(0, hi - qa) rounded up enclose the exact new budget.
 * Laziness: rho of a project never decreases from one round to the next (budgets only fall),
 * so the lower end of its last interval (initially 1/W: q >= cost / W) is a lower bound;
 * projects are priced in increasing order of that bound until it exceeds the best upper end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const double U = 1.1102230246251565e-16; /* 2^-53, the unit round-off */

/* nextafter(v, +inf) and nextafter(v, -inf), inline (the libm call showed in profiles):
 * the neighbouring double is the neighbouring bit pattern, except around zero. */
static inline double up(double v)
{
    if (v != v || v == INFINITY)
        return v;
    if (v == 0.0)
        return 4.9406564584124654e-324; /* the smallest subnormal */
    union { double d; uint64_t u; } x = {.d = v};
    x.u = v > 0.0 ? x.u + 1 : x.u - 1;
    return x.d;
}

static inline double down(double v) { return -up(-v); }

/* relative error bound of a sum of n non-negative rounded products (see above) */
static inline double sum_err(Py_ssize_t n) { return 2.0 * (double)(n + 2) * U; }

enum { UNAFFORDABLE = 0, PRICED = 1, AMBIGUOUS = 2 };

/* Round-to-nearest, and subnormals neither flushed to zero (FTZ) nor read as zero (DAZ). */
static int fp_env_ok(void)
{
    volatile double tiny = DBL_MIN;
    volatile double sub = tiny / 4.0; /* 0 under FTZ */
    volatile double back = sub * 4.0; /* 0 under DAZ */
    return fegetround() == FE_TONEAREST && sub != 0.0 && back == DBL_MIN;
}

typedef struct {
    double qa, qb;   /* qa < q <= qb */
    double rlo, rhi; /* rlo <= rho <= rhi */
    int exact;       /* every supporter has nothing left or pays q: rho == 1 / wpos */
    double wpos;     /* supporters with money left (exact integer) */
} Price;

/* A group's budget interval and weight side by side: pricing reads all three of a supporter
 * at once, and one cache line brings them. (Reading the supporters' budgets from memory is
 * most of a run's time: the caller numbers the groups so that a project's supporters lie
 * close together; the numbering only changes the order of the sums, which the bounds above
 * allow.) */
typedef struct {
    double lo, hi, w;
} Group;

typedef struct {
    const int64_t *ptr, *idx, *rank;
    const double *clo, *chi, *wtot;
    Group *grp;
} Inst;

/* The proof of a bracket qa < q <= qb (see the header): sums of w min(hi, qa) and of
 * w min(lo, qb); kept apart from the rest so that its sums stay in registers. */
static void bracket_sums(const int64_t *s, Py_ssize_t n, const Group *grp, double qa, double qb,
                         double *fhi_out, double *flo_out)
{
    double fhi = 0.0, flo = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Group *g = &grp[s[i]];
        fhi += g->w * (g->hi < qa ? g->hi : qa);
        flo += g->w * (g->lo < qb ? g->lo : qb);
    }
    *fhi_out = fhi;
    *flo_out = flo;
}

/* Supporters with money left (hi > 0), and whether each of them surely pays the full price
 * (lo >= qb): then rho is exactly 1 / wpos. Needed only for the winner's round. */
static void exact_tie(const int64_t *s, Py_ssize_t n, const Group *grp, double qb,
                      int *exact_out, double *wpos_out)
{
    double wpos = 0.0;
    int exact = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Group *g = &grp[s[i]];
        if (g->hi > 0.0) {
            wpos += g->w;
            exact &= g->lo >= qb;
        }
    }
    *exact_out = exact;
    *wpos_out = wpos;
}

/* One water-filling pass at q over hi (estimates only; see `price`): the weight and budgets
 * (hi and lo) of the supporters with hi < q, the smallest hi >= q, and with `first` the sums
 * of all budgets. Branch-free: whether a supporter is below q follows no pattern. */
typedef struct {
    double wc, bch, bcl, next, slo, shi;
} Sums;

static inline void wf_pass(const int64_t *s, Py_ssize_t n, const Group *grp, double q, int first,
                           Sums *out)
{
    double wc = 0.0, bch = 0.0, bcl = 0.0, next = INFINITY, slo = 0.0, shi = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Group *g = &grp[s[i]];
        const double wg = g->w, h = g->hi, l = g->lo;
        if (first) {
            slo += wg * l;
            shi += wg * h;
        }
        const int below = h < q;
        const double wb = below ? wg : 0.0;
        const double above = below ? INFINITY : h;
        wc += wb;
        bch += wb * h;
        bcl += wb * l;
        next = above < next ? above : next;
    }
    out->wc = wc;
    out->bch = bch;
    out->bcl = bcl;
    out->next = next;
    out->slo = slo;
    out->shi = shi;
}

/* Price project p: a proven bracket for q and rho. `q0` is a lower estimate of q to start
 * water-filling from (the caller's lower bound on rho times the cost). */
static int price(const Inst *in, int64_t p, double q0, Price *out)
{
    const int64_t *s = in->idx + in->ptr[p];
    const Py_ssize_t n = (Py_ssize_t)(in->ptr[p + 1] - in->ptr[p]);
    const Group *grp = in->grp;
    const double clo = in->clo[p], chi = in->chi[p], W = in->wtot[p];
    const double e = sum_err(n);
    if (!(q0 > 0.0 && q0 < INFINITY))
        return AMBIGUOUS;
    /* Estimates of q(hi) (with cost clo) and q(lo) (with cost chi), where q(b) solves
     * sum w min(b, q) = c, by water-filling on hi from q0: in exact arithmetic, from any q0
     * at or below the root (c / W is, and so is the caller's lower bound), the iterates
     * q' = (c - sum over b < q of w b) / (W - sum over b < q of w) increase to it, the capped
     * set growing each time; and once no budget lies in [q, q') the capped set is final and
     * q' is the root, so a good start needs one pass. (A q0 above the root is kept as it is.)
     * q(lo) is estimated with the capped set of hi (lo and hi are close, so the sets rarely
     * differ). The first pass also sums the budgets, for affordability. Only estimates: the
     * bracket below is what is proven. */
    double qh = q0, ql = q0, rest = W;
    for (int it = 0;; it++) {
        if (it == 200)
            return AMBIGUOUS;
        Sums f;
        if (it == 0) {
            wf_pass(s, n, grp, qh, 1, &f);
            if (up(f.shi * (1.0 + e)) < clo)
                return UNAFFORDABLE; /* for good: budgets only fall */
            if (down(f.slo * (1.0 - e)) < chi)
                return AMBIGUOUS;
        } else {
            wf_pass(s, n, grp, qh, 0, &f);
        }
        rest = W - f.wc;
        if (rest <= 0.0)
            return AMBIGUOUS;
        const double qn = (clo - f.bch) / rest;
        const int done = !(qn > qh) || qn <= f.next;
        if (qn > qh)
            qh = qn;
        if (done) {
            ql = fmax(qh, (chi - f.bcl) / rest);
            break;
        }
    }
    /* The bracket [q(hi)(1 - eta), q(lo)(1 + eta)] widens until it is proven. Widening by
     * eta moves the sums by about eta q W_u (W_u: supporters who pay q in full), which must
     * beat their error bound e c: so eta starts at a few times e c / (q W_u), below which no
     * bracket can be proven, and the first try usually succeeds. (Each round's bracket
     * widens the [lo, hi] of the winner's supporters, so it is kept as tight as the proof
     * allows.) The estimates and the start only change how often a proof is found, never
     * what is proven. */
    const double spread = clo / (qh * rest); /* c / (q W_u), >= 1 up to rounding */
    for (double eta = fmax(1e-14, 4.0 * e * fmax(1.0, spread)); eta < 1e-6; eta *= 8.0) {
        const double qa = down(qh * (1.0 - eta)), qb = up(ql * (1.0 + eta));
        double fhi, flo;
        bracket_sums(s, n, grp, qa, qb, &fhi, &flo);
        if (up(fhi * (1.0 + e)) < clo && down(flo * (1.0 - e)) >= chi) {
            out->qa = qa;
            out->qb = qb;
            out->rlo = down(qa / chi);
            out->rhi = up(qb / clo);
            out->exact = -1; /* computed by `exact_tie` when needed */
            out->wpos = 0.0;
            return PRICED;
        }
    }
    return AMBIGUOUS;
}

typedef struct {
    int64_t p;
    Price pr;
} Eval;

/* The run; returns the number of projects funded (written to sel), -1 if ambiguous, -2 if
 * out of memory. The groups' final intervals are written to lo and hi. */
static Py_ssize_t run(Inst *in, Py_ssize_t m, Py_ssize_t G, const int8_t *alive0, const double *w,
                      double x_lo, double x_hi, double *lo, double *hi, int64_t *sel)
{
    Py_ssize_t nsel = 0, nalive = 0, result = -1;
    int64_t *order = malloc(sizeof(int64_t) * (size_t)(m + 1));
    double *lb = malloc(sizeof(double) * (size_t)(m + 1));
    Eval *ev = malloc(sizeof(Eval) * (size_t)(m + 1));
    Group *grp = malloc(sizeof(Group) * (size_t)(G + 1));
    in->grp = grp;
    if (!order || !lb || !ev || !grp) {
        result = -2;
        goto done;
    }
    for (Py_ssize_t g = 0; g < G; g++) {
        grp[g].lo = x_lo;
        grp[g].hi = x_hi;
        grp[g].w = w[g];
    }
    for (Py_ssize_t p = 0; p < m; p++) {
        lb[p] = down(1.0 / in->wtot[p]);
        if (alive0[p])
            order[nalive++] = (int64_t)p;
    }
    for (;;) {
        /* insertion sort by lower bound (rank breaks equal bounds; nearly sorted already) */
        for (Py_ssize_t i = 1; i < nalive; i++) {
            const int64_t p = order[i];
            Py_ssize_t j = i;
            while (j > 0 && (lb[order[j - 1]] > lb[p] ||
                             (lb[order[j - 1]] == lb[p] && in->rank[order[j - 1]] > in->rank[p]))) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = p;
        }
        double best_hi = INFINITY;
        Py_ssize_t nev = 0, kept = 0;
        for (Py_ssize_t i = 0; i < nalive; i++) {
            const int64_t p = order[i];
            if (lb[p] > best_hi) {
                order[kept++] = p;
                continue;
            }
            Price pr;
            /* water-filling starts from the lower bound on q that lb[p] gives */
            const double q0 = fmax(down(lb[p] * in->clo[p]), down(in->clo[p] / in->wtot[p]));
            const int st = price(in, p, q0, &pr);
            if (st == AMBIGUOUS)
                goto done;
            if (st == UNAFFORDABLE)
                continue; /* dropped from order */
            if (pr.rlo > lb[p])
                lb[p] = pr.rlo;
            ev[nev].p = p;
            ev[nev].pr = pr;
            nev++;
            if (pr.rhi < best_hi)
                best_hi = pr.rhi;
            order[kept++] = p;
        }
        nalive = kept;
        Py_ssize_t win = -1, ncand = 0;
        int all_exact = 1;
        for (Py_ssize_t k = 0; k < nev; k++) {
            if (ev[k].pr.rlo <= best_hi)
                ncand++;
        }
        for (Py_ssize_t k = 0; k < nev; k++) {
            Price *pr = &ev[k].pr;
            if (pr->rlo > best_hi)
                continue;
            if (ncand > 1) { /* overlapping candidates: decidable only if all are exact */
                const int64_t q = ev[k].p;
                exact_tie(in->idx + in->ptr[q], (Py_ssize_t)(in->ptr[q + 1] - in->ptr[q]), in->grp,
                          pr->qb, &pr->exact, &pr->wpos);
                all_exact &= pr->exact;
            }
            /* among exact candidates: the minimum of 1/wpos, then the best rank */
            if (win < 0 || pr->wpos > ev[win].pr.wpos ||
                (pr->wpos == ev[win].pr.wpos && in->rank[ev[k].p] < in->rank[ev[win].p]))
                win = k;
        }
        if (ncand == 0) {
            result = nsel;
            goto done;
        }
        if (ncand > 1 && !all_exact)
            goto done;
        const int64_t p = ev[win].p;
        const double qa = ev[win].pr.qa, qb = ev[win].pr.qb;
        const int64_t *s = in->idx + in->ptr[p];
        const int64_t n = in->ptr[p + 1] - in->ptr[p];
        for (int64_t i = 0; i < n; i++) {
            Group *g = &in->grp[s[i]];
            const double l = g->lo - qb, h = g->hi - qa;
            g->lo = l > 0.0 ? down(l) : 0.0;
            g->hi = h > 0.0 ? up(h) : 0.0;
        }
        sel[nsel++] = p;
        kept = 0;
        for (Py_ssize_t i = 0; i < nalive; i++)
            if (order[i] != p)
                order[kept++] = order[i];
        nalive = kept;
    }
done:
    if (grp) {
        for (Py_ssize_t g = 0; g < G; g++) {
            lo[g] = grp[g].lo;
            hi[g] = grp[g].hi;
        }
    }
    free(grp);
    free(order);
    free(lb);
    free(ev);
    return result;
}

/* ---- Python binding ----------------------------------------------------------------------- */

static int get_buf(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *kinds,
                   int writable, const char *name)
{
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    const size_t len = strlen(f);
    /* one native (or little-endian, on this little-endian machine) item code, nothing else */
    const int little = (union { uint16_t i; uint8_t c[2]; }){.i = 1}.c[0] == 1;
    const int prefix_ok = len == 1 || (len == 2 && (f[0] == '@' || f[0] == '=' ||
                                                    (f[0] == '<' && little)));
    if (view->itemsize != itemsize || len == 0 || !prefix_ok || !strchr(kinds, f[len - 1])) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous array of %s", name,
                     itemsize == 8 ? (kinds[0] == 'd' ? "float64" : "int64") : "int8");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_run(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[11];
    double x_lo, x_hi;
    if (!PyArg_ParseTuple(args, "OOOOOOOOddOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6], &o[7], &x_lo, &x_hi, &o[8], &o[9], &o[10]))
        return NULL;
    /* ptr, idx, rank, w, clo, chi, wtot, alive, lo, hi, sel */
    static const char *names[11] = {"ptr", "idx", "rank", "w", "clo", "chi",
                                    "wtot", "alive", "lo", "hi", "sel"};
    static const char *kinds[11] = {"ql", "ql", "ql", "d", "d", "d", "d", "bB?", "d", "d", "ql"};
    static const Py_ssize_t sizes[11] = {8, 8, 8, 8, 8, 8, 8, 1, 8, 8, 8};
    static const int writable[11] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
    Py_buffer b[11];
    int got = 0;
    PyObject *ret = NULL;
    for (; got < 11; got++)
        if (get_buf(o[got], &b[got], sizes[got], kinds[got], writable[got], names[got]) < 0)
            goto out;
    const Py_ssize_t m = b[4].len / 8, G = b[3].len / 8;
    if (b[0].len / 8 != m + 1 || b[2].len / 8 != m || b[5].len / 8 != m || b[6].len / 8 != m ||
        b[7].len != m || b[8].len / 8 != G || b[9].len / 8 != G || b[10].len / 8 < m) {
        PyErr_SetString(PyExc_ValueError, "array lengths do not match");
        goto out;
    }
    const int64_t *ptr = b[0].buf, *idx = b[1].buf;
    const Py_ssize_t P = b[1].len / 8;
    if (ptr[0] != 0 || ptr[m] != P) {
        PyErr_SetString(PyExc_ValueError, "ptr does not match idx");
        goto out;
    }
    for (Py_ssize_t p = 0; p < m; p++)
        if (ptr[p + 1] < ptr[p]) {
            PyErr_SetString(PyExc_ValueError, "ptr is not non-decreasing");
            goto out;
        }
    for (Py_ssize_t i = 0; i < P; i++)
        if (idx[i] < 0 || idx[i] >= G) {
            PyErr_SetString(PyExc_ValueError, "idx names a group out of range");
            goto out;
        }
    if (!(isfinite(x_lo) && isfinite(x_hi) && 0.0 <= x_lo && x_lo <= x_hi)) {
        PyErr_SetString(PyExc_ValueError, "need finite 0 <= x_lo <= x_hi");
        goto out;
    }
    const double *clo = b[4].buf, *chi = b[5].buf, *wtot = b[6].buf, *w = b[3].buf;
    for (Py_ssize_t p = 0; p < m; p++)
        if (!(isfinite(clo[p]) && isfinite(chi[p]) && 0.0 <= clo[p] && clo[p] <= chi[p] &&
              wtot[p] >= 1.0 && wtot[p] < 9007199254740992.0)) {
            PyErr_SetString(PyExc_ValueError, "need finite 0 <= clo <= chi and 1 <= wtot < 2^53");
            goto out;
        }
    for (Py_ssize_t g = 0; g < G; g++)
        if (!(w[g] >= 1.0 && w[g] < 9007199254740992.0)) {
            PyErr_SetString(PyExc_ValueError, "need weights 1 <= w < 2^53");
            goto out;
        }
    Inst in = {.ptr = ptr, .rank = b[2].buf, .idx = idx, .clo = clo, .chi = chi,
               .wtot = wtot, .grp = NULL};
    Py_ssize_t n = -1;
    /* The arrays must not change while this runs (the caller owns them; nothing shares them). */
    if (fp_env_ok()) {
        Py_BEGIN_ALLOW_THREADS
        n = run(&in, m, G, b[7].buf, w, x_lo, x_hi, b[8].buf, b[9].buf, b[10].buf);
        Py_END_ALLOW_THREADS
    }
    if (n == -2) {
        PyErr_NoMemory();
        goto out;
    }
    ret = PyLong_FromSsize_t(n);
out:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    return ret;
}

/* down(x) and up(x), for the tests: they must be nextafter towards -inf and +inf. */
static PyObject *py_neighbours(PyObject *self, PyObject *arg)
{
    (void)self;
    const double x = PyFloat_AsDouble(arg);
    if (x == -1.0 && PyErr_Occurred())
        return NULL;
    return Py_BuildValue("dd", down(x), up(x));
}

static PyMethodDef methods[] = {
    {"neighbours", py_neighbours, METH_O,
     "neighbours(x) -> (down, up): the doubles next to x towards -inf and +inf (tests)."},
    {"run", py_run, METH_VARARGS,
     "run(ptr, idx, rank, w, clo, chi, wtot, alive, x_lo, x_hi, lo, hi, sel) -> int\n\n"
     "One certified float MES run (approval, cost-satisfaction) at a per-voter budget in\n"
     "[x_lo, x_hi]. Writes the funded projects in order to sel and returns their number,\n"
     "or -1 when the floats cannot prove a decision (run the exact engine then)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_mes", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__mes(void) { return PyModule_Create(&module); }
