/* plot.c — renders a run's metrics.jsonl to a PNG with cairo.
 *
 * train_plot_metrics (pretraining, SFT, RM, DPO): two panels, the training
 * loss per step (faint) with its moving average and the held-out loss at
 * each evaluation; and the learning rate with the throughput (tokens/s).
 * Runs on rankings (RM, DPO) get a third: the held-out pairwise accuracy
 * (the RM's, or DPO's implicit-reward accuracy) at each evaluation.
 * train_plot_panels (RL): a grid of small panels, any fields per panel.
 * Axes are scaled to the data with round tick values. Called by rank 0
 * after each evaluation and at the end of a run, so the picture is current
 * while a long run goes on.
 */
#include "trainer/run.h"

#include <cairo.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double *x, *y;
    size_t n, cap;
} series_t;

static void push(series_t *s, double x, double y)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = gl_xrealloc(s->x, s->cap * sizeof *s->x);
        s->y = gl_xrealloc(s->y, s->cap * sizeof *s->y);
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

typedef struct {
    double x0, y0, w, h;      /* panel rectangle in pixels */
    double xmin, xmax, ymin, ymax;
} panel_t;

static double px(const panel_t *p, double x) { return p->x0 + (x - p->xmin) / (p->xmax - p->xmin) * p->w; }
static double py(const panel_t *p, double y) { return p->y0 + p->h - (y - p->ymin) / (p->ymax - p->ymin) * p->h; }

static double nice_step(double range)
{
    double raw = range / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void range_of(const series_t *s, double *lo, double *hi)
{
    for (size_t i = 0; i < s->n; i++)
        if (isfinite(s->y[i])) {
            *lo = s->y[i] < *lo ? s->y[i] : *lo;
            *hi = s->y[i] > *hi ? s->y[i] : *hi;
        }
}

static void axes(cairo_t *cr, const panel_t *p, const char *title, const char *ylabel)
{
    char buf[64];
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, p->x0, p->y0, p->w, p->h);
    cairo_fill(cr);
    cairo_set_line_width(cr, 1);
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 11);
    double st = nice_step(p->ymax - p->ymin);
    for (double v = ceil(p->ymin / st) * st; v <= p->ymax + 1e-12; v += st) {
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, p->x0, py(p, v));
        cairo_line_to(cr, p->x0 + p->w, py(p, v));
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        snprintf(buf, sizeof buf, "%g", v);
        cairo_move_to(cr, p->x0 - 8 - 6.5 * (double)strlen(buf), py(p, v) + 4);
        cairo_show_text(cr, buf);
    }
    double sx = nice_step(p->xmax - p->xmin);
    for (double v = ceil(p->xmin / sx) * sx; v <= p->xmax + 1e-9; v += sx) {
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        snprintf(buf, sizeof buf, "%g", v);
        cairo_move_to(cr, px(p, v) - 3.2 * (double)strlen(buf), p->y0 + p->h + 16);
        cairo_show_text(cr, buf);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_rectangle(cr, p->x0, p->y0, p->w, p->h);
    cairo_stroke(cr);
    cairo_set_font_size(cr, 13);
    cairo_move_to(cr, p->x0, p->y0 - 8);
    cairo_show_text(cr, title);
    cairo_set_font_size(cr, 11);
    cairo_move_to(cr, p->x0 + p->w / 2 - 3.2 * (double)strlen(ylabel), p->y0 + p->h + 32);
    cairo_show_text(cr, ylabel);
}

static void line(cairo_t *cr, const panel_t *p, const series_t *s, double r, double g, double b, double a, double wd)
{
    cairo_save(cr);
    cairo_rectangle(cr, p->x0, p->y0, p->w, p->h);
    cairo_clip(cr);
    cairo_set_source_rgba(cr, r, g, b, a);
    cairo_set_line_width(cr, wd);
    int pen = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!isfinite(s->y[i])) {
            pen = 0;
            continue;
        }
        if (pen)
            cairo_line_to(cr, px(p, s->x[i]), py(p, s->y[i]));
        else
            cairo_move_to(cr, px(p, s->x[i]), py(p, s->y[i]));
        pen = 1;
    }
    cairo_stroke(cr);
    cairo_restore(cr);
}

static void dots(cairo_t *cr, const panel_t *p, const series_t *s, double r, double g, double b)
{
    cairo_set_source_rgb(cr, r, g, b);
    for (size_t i = 0; i < s->n; i++) {
        cairo_arc(cr, px(p, s->x[i]), py(p, s->y[i]), 3.5, 0, 2 * M_PI);
        cairo_fill(cr);
    }
}

static void legend(cairo_t *cr, double x, double y, const char *text, double r, double g, double b)
{
    cairo_set_source_rgb(cr, r, g, b);
    cairo_rectangle(cr, x, y - 8, 14, 4);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, x + 20, y - 3);
    cairo_show_text(cr, text);
}

/* Writes the surface to png atomically (a temporary name, then a durable
 * rename) and destroys it. */
static int write_png(cairo_surface_t *surf, const char *png, gl_err_t *err)
{
    char *tmp = gl_xmalloc(strlen(png) + 8);
    sprintf(tmp, "%s.tmp", png);
    cairo_status_t cs = cairo_surface_write_to_png(surf, tmp);
    cairo_surface_destroy(surf);
    int rc = cs != CAIRO_STATUS_SUCCESS
                 ? gl_err_set(err, GL_EIO, "%s: cannot write PNG: %s", tmp, cairo_status_to_string(cs))
                 : gl_rename_durable(tmp, png, err);
    free(tmp);
    return rc;
}

/* Calls fn with each record of a metrics.jsonl (lines that do not parse
 * are skipped) and its step + 1, the x of the plots. */
static int each_record(const char *metrics, void (*fn)(json_t *j, double step, void *ctx), void *ctx,
                       gl_err_t *err)
{
    char *data;
    size_t len;
    int rc = gl_read_file(metrics, (size_t)1 << 31, &data, &len, err);
    if (rc)
        return rc;
    for (char *ln = data, *end; ln < data + len; ln = end + 1) {
        end = memchr(ln, '\n', (size_t)(data + len - ln));
        if (!end)
            end = data + len;
        *end = '\0';
        json_t *j = json_loads(ln, 0, NULL);
        if (!j)
            continue;
        fn(j, (double)json_integer_value(json_object_get(j, "step")) + 1, ctx);
        json_decref(j);
    }
    free(data);
    return GL_OK;
}

typedef struct {
    series_t loss, val, lr, tps, vacc;
} run_series_t;

static void add_run_record(json_t *j, double step, void *ctx)
{
    run_series_t *r = ctx;
    json_t *v;
    if ((v = json_object_get(j, "loss"))) {
        push(&r->loss, step, json_number_value(v));
        push(&r->lr, step, json_number_value(json_object_get(j, "lr")));
        push(&r->tps, step, json_number_value(json_object_get(j, "tokens_per_s")));
    }
    if ((v = json_object_get(j, "val_loss")))
        push(&r->val, step, json_number_value(v));
    if ((v = json_object_get(j, "val_accuracy")))
        push(&r->vacc, step, json_number_value(v));
}

int train_plot_metrics(const char *metrics, const char *png, gl_err_t *err)
{
    run_series_t r = {0};
    int rc = each_record(metrics, add_run_record, &r, err);
    if (rc)
        return rc;
    series_t loss = r.loss, avg = {0}, val = r.val, lr = r.lr, tps = r.tps, vacc = r.vacc;
    if (!loss.n) {
        rc = gl_err_set(err, GL_ENOTFOUND, "%s: no training steps to plot", metrics);
        goto out;
    }
    /* trailing mean over a window of 1/50 of the run: smooth, little lag */
    size_t win = loss.n / 50 ? loss.n / 50 : 1;
    double acc = 0;
    for (size_t i = 0; i < loss.n; i++) {
        acc += loss.y[i];
        if (i >= win)
            acc -= loss.y[i - win];
        push(&avg, loss.x[i], acc / (double)(i + 1 < win ? i + 1 : win));
    }
    const int W = 900, H = vacc.n ? 880 : 650;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 0.96, 0.96, 0.96);
    cairo_paint(cr);
    double xmax = loss.x[loss.n - 1] > 1 ? loss.x[loss.n - 1] : 2;
    double lo = INFINITY, hi = -INFINITY;
    range_of(&avg, &lo, &hi);
    range_of(&val, &lo, &hi);
    double lo2 = lo, hi2 = hi;
    range_of(&loss, &lo2, &hi2);
    hi = hi2 < hi + (hi - lo) ? hi2 : hi + 0.5 * (hi - lo); /* keep early spikes from flattening the curve */
    if (!(hi > lo))
        hi = lo + 1;
    panel_t top = {70, 40, W - 100, 320, 0, xmax, lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)};
    axes(cr, &top, "loss", "step");
    line(cr, &top, &loss, 0.2, 0.4, 0.8, 0.25, 1);
    line(cr, &top, &avg, 0.1, 0.3, 0.8, 1, 2);
    dots(cr, &top, &val, 0.85, 0.3, 0.1);
    cairo_set_font_size(cr, 11);
    legend(cr, top.x0 + top.w - 190, top.y0 + 20, "train loss (moving average)", 0.1, 0.3, 0.8);
    legend(cr, top.x0 + top.w - 190, top.y0 + 38, "held-out loss", 0.85, 0.3, 0.1);
    char last[96];
    snprintf(last, sizeof last, "last: train %.4f", avg.y[avg.n - 1]);
    if (val.n)
        snprintf(last, sizeof last, "last: train %.4f, held-out %.4f", avg.y[avg.n - 1], val.y[val.n - 1]);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, top.x0 + 10, top.y0 + top.h - 10);
    cairo_show_text(cr, last);

    double l0 = 0, l1 = -INFINITY, t0 = 0, t1 = -INFINITY;
    range_of(&lr, &l0, &l1);
    range_of(&tps, &t0, &t1);
    if (!(l1 > 0))
        l1 = 1;
    if (!(t1 > 0))
        t1 = 1;
    panel_t bot = {70, 430, W - 100, 160, 0, xmax, 0, l1 * 1.1};
    axes(cr, &bot, "learning rate and throughput", "step");
    line(cr, &bot, &lr, 0.2, 0.6, 0.2, 1, 2);
    /* throughput scaled into the same panel */
    series_t tpsn = {0};
    for (size_t i = 0; i < tps.n; i++)
        push(&tpsn, tps.x[i], tps.y[i] / (t1 * 1.1) * l1 * 1.1);
    line(cr, &bot, &tpsn, 0.5, 0.5, 0.5, 0.6, 1);
    char tl[64];
    snprintf(tl, sizeof tl, "tokens/s (max %.0f)", t1);
    legend(cr, bot.x0 + bot.w - 190, bot.y0 + 20, "learning rate", 0.2, 0.6, 0.2);
    legend(cr, bot.x0 + bot.w - 190, bot.y0 + 38, tl, 0.5, 0.5, 0.5);
    free(tpsn.x), free(tpsn.y);

    if (vacc.n) {
        panel_t acc = {70, 660, W - 100, 160, 0, xmax, 0, 1};
        series_t chance = {0};
        push(&chance, 0, 0.5);
        push(&chance, xmax, 0.5);
        axes(cr, &acc, "held-out pairwise accuracy", "step");
        line(cr, &acc, &chance, 0.5, 0.5, 0.5, 0.6, 1);
        line(cr, &acc, &vacc, 0.85, 0.3, 0.1, 1, 1.5);
        dots(cr, &acc, &vacc, 0.85, 0.3, 0.1);
        cairo_set_font_size(cr, 11);
        /* the legend low: the curve climbs towards 1 */
        legend(cr, acc.x0 + acc.w - 190, acc.y0 + acc.h - 28, "held-out accuracy", 0.85, 0.3, 0.1);
        legend(cr, acc.x0 + acc.w - 190, acc.y0 + acc.h - 10, "chance (0.5)", 0.5, 0.5, 0.5);
        snprintf(last, sizeof last, "last: %.1f%%", 100 * vacc.y[vacc.n - 1]);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_move_to(cr, acc.x0 + 10, acc.y0 + acc.h - 10);
        cairo_show_text(cr, last);
        free(chance.x), free(chance.y);
    }

    cairo_destroy(cr);
    rc = write_png(surf, png, err);
out:
    free(loss.x), free(loss.y), free(avg.x), free(avg.y), free(val.x), free(val.y);
    free(lr.x), free(lr.y), free(tps.x), free(tps.y), free(vacc.x), free(vacc.y);
    return rc;
}

typedef struct {
    const train_plot_panel_t *panels;
    int n;
    series_t *s; /* 3 per panel */
    double xmax;
} panels_series_t;

static void add_panels_record(json_t *j, double step, void *ctx)
{
    panels_series_t *ps = ctx;
    for (int p = 0; p < ps->n; p++)
        for (int k = 0; k < 3 && ps->panels[p].keys[k]; k++) {
            json_t *v = json_object_get(j, ps->panels[p].keys[k]);
            if (json_is_number(v)) {
                push(&ps->s[p * 3 + k], step, json_number_value(v));
                ps->xmax = step > ps->xmax ? step : ps->xmax;
            }
        }
}

int train_plot_panels(const char *metrics, const char *png, const train_plot_panel_t *panels, int n, gl_err_t *err)
{
    static const double colors[3][3] = {{0.1, 0.3, 0.8}, {0.85, 0.3, 0.1}, {0.2, 0.6, 0.2}};
    panels_series_t ps = {panels, n, gl_xcalloc((size_t)n * 3, sizeof(series_t)), 2};
    int rc = each_record(metrics, add_panels_record, &ps, err);
    if (rc) {
        free(ps.s);
        return rc;
    }
    series_t *s = ps.s;
    double xmax = ps.xmax;
    const int W = 1000, PH = 170, rows = (n + 1) / 2, H = 40 + rows * (PH + 70);
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 0.96, 0.96, 0.96);
    cairo_paint(cr);
    for (int p = 0; p < n; p++) {
        double lo = INFINITY, hi = -INFINITY;
        for (int k = 0; k < 3 && panels[p].keys[k]; k++)
            range_of(&s[p * 3 + k], &lo, &hi);
        if (!(hi >= lo))
            lo = 0, hi = 1;
        if (!(hi > lo))
            hi = lo + (lo ? fabs(lo) * 0.1 : 1);
        double pad = 0.05 * (hi - lo);
        panel_t pn = {70 + (p % 2) * (W / 2), 40 + (p / 2) * (PH + 70), W / 2 - 100, PH, 0, xmax, lo - pad, hi + pad};
        axes(cr, &pn, panels[p].title, "step");
        cairo_set_font_size(cr, 11);
        for (int k = 0; k < 3 && panels[p].keys[k]; k++) {
            const double *c = colors[k];
            line(cr, &pn, &s[p * 3 + k], c[0], c[1], c[2], 1, 1.5);
            if (panels[p].keys[1])
                legend(cr, pn.x0 + pn.w - 150, pn.y0 + 20 + 18 * k,
                       panels[p].labels[k] ? panels[p].labels[k] : panels[p].keys[k], c[0], c[1], c[2]);
        }
    }
    cairo_destroy(cr);
    rc = write_png(surf, png, err);
    for (int i = 0; i < n * 3; i++)
        free(s[i].x), free(s[i].y);
    free(s);
    return rc;
}
