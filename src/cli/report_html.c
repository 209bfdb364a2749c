/*
 * The report page: HTML with inline CSS and inline SVG, no script, no
 * external URL (not even a font or the SVG namespace), printable on A4 and
 * readable in a dark theme. Colours are the Okabe–Ito palette, and every
 * colour has a text next to it, so nothing is told by colour alone.
 *
 * Every string from the log goes through esc(): the partner chose some of
 * them (query names, parameters, labels, reasons), so they may hold markup,
 * control characters or bidi overrides. A cell's count is printed only for
 * a released cell: a suppressed one is drawn as a hatched bar up to
 * min_count, the public bound, and says so.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/report.h"

#define P(...) fprintf(f, __VA_ARGS__)

/* ---- text ----------------------------------------------------------------- */

/* HTML-escapes s (valid UTF-8: jansson checked it). Control characters and
 * the bidi controls that could reorder what is shown become visible
 * "\xNN" / "[U+202E]" text. */
static void esc(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  for (; *p; p++) {
    unsigned char c = *p;
    if (c == '&')
      fputs("&amp;", f);
    else if (c == '<')
      fputs("&lt;", f);
    else if (c == '>')
      fputs("&gt;", f);
    else if (c == '"')
      fputs("&quot;", f);
    else if (c == '\'')
      fputs("&#39;", f);
    else if (c < 0x20 || c == 0x7f)
      P("\\x%02x", c);
    else if (c == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) { /* C1 controls */
      P("\\x%02x", p[1]);
      p++;
    } else if (c == 0xe2 && p[1] == 0x80 &&
               ((p[2] >= 0xaa && p[2] <= 0xae) || p[2] == 0x8e || p[2] == 0x8f)) {
      P("[U+20%02X]", (unsigned)(p[2] - 0x80));
      p += 2;
    } else if (c == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9) {
      P("[U+20%02X]", (unsigned)(p[2] - 0x80 + 0x40));
      p += 2;
    } else
      fputc(c, f);
  }
}

/* At most n characters of s, escaped, with "…" when cut: for labels in a
 * chart, where text does not wrap (the table has them whole). */
static void esc_short(FILE *f, const char *s, size_t n) {
  char buf[256];
  size_t i = 0, chars = 0;
  while (s[i] && chars < n && i + 4 < sizeof buf) {
    size_t len = 1;
    while ((s[i + len] & 0xc0) == 0x80)
      len++;
    i += len;
    chars++;
  }
  memcpy(buf, s, i);
  buf[i] = 0;
  esc(f, buf);
  if (s[i])
    P("…");
}

static const char *str(json_t *o, const char *k) {
  return json_string_value(json_object_get(o, k));
}

static int has_int(json_t *o, const char *k) { return json_is_integer(json_object_get(o, k)); }

static long long num(json_t *o, const char *k) {
  return (long long)json_integer_value(json_object_get(o, k));
}

/* "2025-01-01T00:00:01.500Z" shown as "2025-01-01 00:00:01". */
static void time_text(FILE *f, const char *t) {
  char buf[32];
  if (t == NULL) {
    fputs("—", f);
    return;
  }
  snprintf(buf, sizeof buf, "%s", t);
  char *dot = strchr(buf, '.');
  if (dot)
    *dot = 0;
  char *tt = strchr(buf, 'T');
  if (tt)
    *tt = ' ';
  esc(f, buf);
}

/* A fingerprint in short form, the whole one in the tooltip. */
static void fp_short(FILE *f, const char *fp) {
  if (fp == NULL || fp[0] == 0) {
    fputs("<span class=\"muted\">unknown</span>", f);
    return;
  }
  char s[17];
  snprintf(s, sizeof s, "%s", fp);
  P("<code title=\"");
  esc(f, fp);
  P("\">");
  esc(f, s);
  P("…</code>");
}

static const char *first_key(json_t *set) {
  void *it = json_object_iter(set);
  return it ? json_object_iter_key(it) : NULL;
}

/* ---- the page frame ------------------------------------------------------- */

static const char CSS[] =
    ":root{--bg:#fff;--fg:#1b1f24;--muted:#5b6470;--line:#d5d9de;--panel:#f6f7f9;"
    "--own:#56B4E9;--peer:#E69F00;--both:#0072B2;--ok:#009E73;--bad:#D55E00;--warn:#E69F00;"
    "--sup:#6b7280;--withheld:#CC79A7}\n"
    "@media (prefers-color-scheme:dark){:root{--bg:#15181c;--fg:#e8eaed;--muted:#a0a8b3;"
    "--line:#3a4048;--panel:#1e2227;--sup:#a0a8b3}}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0 auto;max-width:1060px;padding:24px 28px 40px;background:var(--bg);"
    "color:var(--fg);font:15px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,\"DejaVu Sans\","
    "\"Liberation Sans\",sans-serif}\n"
    "h1{font-size:26px;margin:0 0 2px;font-weight:650}"
    "h2{font-size:21px;margin:0 0 6px;font-weight:650}"
    "h3{font-size:17px;margin:22px 0 6px;font-weight:650}"
    "h4{font-size:14px;margin:14px 0 "
    "4px;font-weight:650;color:var(--muted);text-transform:uppercase;"
    "letter-spacing:.04em}\n"
    "code{font:13px/1.3 ui-monospace,\"DejaVu Sans Mono\",\"Liberation Mono\",monospace}\n"
    ".muted{color:var(--muted)}.small{font-size:13px}\n"
    "header{border-bottom:2px solid var(--fg);padding-bottom:8px;margin-bottom:16px}\n"
    ".banner{border:1px solid var(--line);border-left:6px solid var(--ok);padding:10px 14px;"
    "margin:0 0 18px;background:var(--panel)}\n"
    ".banner.bad{border-left-color:var(--bad)}.banner.warn{border-left-color:var(--warn)}\n"
    ".banner strong.v{color:var(--ok)}.banner.bad strong.v{color:var(--bad)}"
    ".banner.warn strong.v{color:var(--fg)}\n"
    ".partial{border:2px dashed var(--bad);padding:4px 10px;margin:8px 0;color:var(--bad);"
    "font-weight:600}\n"
    "section.collab{border-top:1px solid var(--line);padding-top:14px;margin-top:18px}\n"
    ".parties{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin:8px 0 4px}\n"
    ".party{background:var(--panel);border:1px solid var(--line);padding:8px 12px}\n"
    ".party .org{font-size:17px;font-weight:650}\n"
    ".query{border:1px solid var(--line);padding:4px 16px 14px;margin:16px "
    "0;break-inside:avoid-page}\n"
    ".query h3{margin-top:12px}\n"
    ".grid2{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px}\n"
    "table{border-collapse:collapse;width:100%;font-size:13.5px;margin:4px 0}\n"
    "th,td{text-align:left;padding:4px 8px;border-bottom:1px solid "
    "var(--line);vertical-align:top}\n"
    "th{font-weight:600;color:var(--muted);font-size:12.5px}td.t{white-space:nowrap}\n"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\n"
    ".tag{display:inline-block;padding:0 7px;border-radius:3px;font-size:12.5px;font-weight:600;"
    "border:1.5px solid currentColor;white-space:nowrap}\n"
    ".tag.released{color:var(--both)}.tag.suppressed{color:var(--sup);border-style:dashed}"
    ".tag.refused{color:var(--bad)}.tag.aborted{color:var(--bad);border-style:dotted}"
    ".tag.withheld{color:var(--withheld)}.tag.nothing,.tag.started{color:var(--muted)}\n"
    "@media (prefers-color-scheme:dark){.tag.released{color:var(--own)}}\n"
    "svg{display:block;width:100%;height:auto;overflow:visible}\n"
    "svg text{fill:var(--fg);font-size:13px;font-family:inherit}\n"
    "svg text.m{fill:var(--muted);font-size:12px}svg text.b{font-weight:650}\n"
    ".own{fill:var(--own)}.peer{fill:var(--peer)}.both{fill:var(--both)}"
    ".track{fill:var(--panel);stroke:var(--line)}.rule{stroke:var(--muted);stroke-dasharray:3 3}\n"
    ".hatch-stroke{stroke:var(--sup);fill:url(#cr-hatch)}.hatch-line{stroke:var(--sup)}\n"
    ".legend span{display:inline-block;margin-right:14px}\n"
    ".sw{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px}\n"
    ".dp{border:1px dashed var(--line);padding:6px 10px;margin:10px 0}\n"
    "footer{margin-top:28px;border-top:1px solid var(--line);padding-top:8px;font-size:12.5px;"
    "color:var(--muted)}\n"
    "@media (max-width:760px){.parties,.grid2{grid-template-columns:1fr}}\n"
    "@media print{:root{--bg:#fff;--fg:#000;--muted:#444;--line:#bbb;--panel:#fff;--sup:#555}"
    "@page{size:A4;margin:14mm}body{max-width:none;padding:0;font-size:10.5pt}"
    ".banner,.party,.query{background:none}.query,.banner,table,svg{break-inside:avoid}"
    "h2,h3{break-after:avoid}"
    "*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}\n";

static void defs(FILE *f) {
  /* One hatch pattern for every chart, referenced by fragment only. */
  P("<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\" "
    "focusable=\"false\"><defs><pattern id=\"cr-hatch\" width=\"7\" height=\"7\" "
    "patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
    "<rect width=\"7\" height=\"7\" fill=\"none\"/>"
    "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"7\" class=\"hatch-line\" stroke-width=\"3\"/>"
    "</pattern></defs></svg>\n");
}

/* ---- pieces ------------------------------------------------------------- */

static void params_text(FILE *f, json_t *params) {
  const char *k;
  json_t *v;
  int n = 0;
  json_object_foreach(params, k, v) {
    P("%s<code>", n++ ? "<br>" : "");
    esc(f, k);
    P("=");
    if (json_is_string(v))
      esc(f, json_string_value(v));
    else {
      char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
      esc(f, t ? t : "?");
      free(t);
    }
    P("</code>");
  }
  if (n == 0)
    P("<span class=\"muted\">—</span>");
}

static const char *outcome_label(const char *o) {
  if (strcmp(o, "released") == 0)
    return "released";
  if (strcmp(o, "suppressed") == 0)
    return "suppressed";
  if (strcmp(o, "refused") == 0)
    return "refused";
  if (strcmp(o, "aborted") == 0)
    return "aborted";
  if (strcmp(o, "withheld") == 0)
    return "withheld";
  if (strcmp(o, "nothing") == 0)
    return "completed";
  return "unfinished";
}

/* The partner's set size, labelled as a bucket when the log says it is one. */
static void peer_size_text(FILE *f, json_t *r) {
  if (!has_int(r, "peer_set_size")) {
    P("<span class=\"muted\">—</span>");
    return;
  }
  P("%lld", num(r, "peer_set_size"));
  if (json_is_true(json_object_get(r, "peer_set_size_is_bucket")))
    P(" <span class=\"muted\">(size bucket)</span>");
}

static size_t cells_suppressed(json_t *cells) {
  size_t i, n = 0;
  json_t *c;
  json_array_foreach(cells, i, c) n += json_is_true(json_object_get(c, "suppressed"));
  return n;
}

/* The "result" column of the timeline. */
static void result_text(FILE *f, json_t *r) {
  const char *o = str(r, "outcome");
  json_t *rel = json_object_get(r, "released");
  if (strcmp(o, "released") == 0 && json_is_object(rel)) {
    json_t *cells = json_object_get(rel, "cells");
    if (json_is_array(cells)) {
      size_t n = json_array_size(cells), s = cells_suppressed(cells);
      P("%zu cells: %zu released, %zu suppressed", n, n - s, s);
    } else if (str(rel, "rows_file") != NULL) {
      P("overlap %lld; %lld rows written to <code>", num(rel, "count"), num(rel, "rows"));
      esc(f, str(rel, "rows_file"));
      P("</code>");
    } else if (has_int(rel, "count")) {
      P("overlap <strong>%lld</strong>", num(rel, "count"));
    }
  } else if (strcmp(o, "suppressed") == 0) {
    P("suppressed (&lt; min_count %lld)", num(rel, "min_count"));
  } else if (strcmp(o, "nothing") == 0) {
    P("<span class=\"muted\">nothing released to this side</span>");
  } else if (strcmp(o, "started") == 0) {
    P("<span class=\"muted\">no outcome recorded</span>");
  } else {
    const char *who = json_is_true(json_object_get(r, "by_self"))     ? "by this node: "
                      : json_is_true(json_object_get(r, "from_peer")) ? "by the partner: "
                      : json_object_get(r, "from_peer") != NULL       ? "by this node: "
                                                                      : "";
    P("%s", who);
    esc(f, str(r, "reason") ? str(r, "reason") : "no reason recorded");
    if (str(r, "wire_error")) {
      P(" <code class=\"muted\">");
      esc(f, str(r, "wire_error"));
      P("</code>");
    }
  }
}

/* The overlap drawn to scale: our set on top, the partner's below, shifted
 * so that the released overlap lines up; when no overlap was released both
 * start at 0 and nothing joins them. */
static void overlap_svg(FILE *f, json_t *r) {
  if (!has_int(r, "own_set_size") || !has_int(r, "peer_set_size"))
    return;
  double own = (double)num(r, "own_set_size"), peer = (double)num(r, "peer_set_size");
  json_t *rel = json_object_get(r, "released");
  int known = json_is_object(rel) && has_int(rel, "count") && !json_object_get(rel, "cells");
  double both = known ? (double)num(rel, "count") : 0;
  if (both > own || both > peer)
    known = 0, both = 0; /* inconsistent: do not draw what cannot be */
  double span = known ? own + peer - both : (own > peer ? own : peer);
  if (span <= 0)
    span = 1;
  const double x0 = 140, w = 410;
  double ow = w * own / span, pw = w * peer / span, px = x0 + (known ? w * (own - both) / span : 0);
  int bucket = json_is_true(json_object_get(r, "peer_set_size_is_bucket"));
  P("<svg viewBox=\"0 0 560 132\" role=\"img\" aria-label=\"overlap of the two sets, to scale\">");
  if (known) {
    double bx = px, bw = w * both / span;
    P("<rect x=\"%.1f\" y=\"26\" width=\"%.1f\" height=\"86\" class=\"both\" opacity=\"0.18\"/>",
      bx, bw < 1 ? 1 : bw);
    P("<line x1=\"%.1f\" y1=\"22\" x2=\"%.1f\" y2=\"116\" style=\"stroke:var(--both)\"/>", bx, bx);
    P("<line x1=\"%.1f\" y1=\"22\" x2=\"%.1f\" y2=\"116\" style=\"stroke:var(--both)\"/>", bx + bw,
      bx + bw);
    double tx = bx + bw / 2;
    const char *anchor = "middle";
    if (tx < x0 + 90)
      tx = bx, anchor = "start";
    else if (tx > x0 + w - 90)
      tx = bx + bw, anchor = "end";
    P("<text x=\"%.1f\" y=\"16\" text-anchor=\"%s\" class=\"b\">overlap %lld "
      "(%.1f%% of ours, %.1f%% of theirs)</text>",
      tx, anchor, num(rel, "count"), 100.0 * both / (own > 0 ? own : 1),
      100.0 * both / (peer > 0 ? peer : 1));
  }
  P("<text x=\"0\" y=\"46\" class=\"b\">Our set</text>"
    "<text x=\"0\" y=\"62\" class=\"m\">%lld distinct keys</text>",
    num(r, "own_set_size"));
  P("<rect x=\"%.1f\" y=\"34\" width=\"%.1f\" height=\"28\" class=\"own\"/>", x0, ow < 1 ? 1 : ow);
  P("<text x=\"0\" y=\"90\" class=\"b\">Partner&#39;s set</text>"
    "<text x=\"0\" y=\"106\" class=\"m\">%lld %s</text>",
    num(r, "peer_set_size"), bucket ? "(size bucket)" : "distinct keys");
  P("<rect x=\"%.1f\" y=\"78\" width=\"%.1f\" height=\"28\" class=\"peer\"%s/>", px,
    pw < 1 ? 1 : pw, bucket ? " opacity=\"0.6\"" : "");
  if (!known) {
    const char *why = !json_is_object(rel) ? "overlap not released to this side"
                      : json_is_true(json_object_get(rel, "suppressed"))
                          ? "overlap suppressed (below min_count): its size is not shown"
                          : "overlap not shown";
    P("<text x=\"%.1f\" y=\"126\" class=\"m\">%s</text>", x0, why);
  }
  P("</svg>\n");
}

static const char *label_or_all(const char *s) { return s == NULL || s[0] == 0 ? NULL : s; }

/* group_by cells as horizontal bars; suppressed cells hatched up to
 * min_count (the public bound), with no value. */
static void cells_svg(FILE *f, json_t *rel) {
  json_t *cells = json_object_get(rel, "cells"), *c;
  size_t i, n = json_array_size(cells);
  if (n == 0)
    return;
  long long min = has_int(rel, "min_count") ? num(rel, "min_count") : 0;
  int any_p = 0, any_c = 0;
  double max = (double)min;
  json_array_foreach(cells, i, c) {
    any_p |= label_or_all(str(c, "provider")) != NULL;
    any_c |= label_or_all(str(c, "consumer")) != NULL;
    if (!json_is_true(json_object_get(c, "suppressed")) && has_int(c, "count") &&
        (double)num(c, "count") > max)
      max = (double)num(c, "count");
  }
  /* Room right of a hatched bar for its words; the scale stays linear. */
  if (max < 1.5 * (double)min)
    max = 1.5 * (double)min;
  if (max <= 0)
    max = 1;
  const double x0 = 150, w = 300, rh = 30, top = 22;
  double h = top + rh * (double)n + 8;
  P("<svg viewBox=\"0 0 560 %.0f\" role=\"img\" aria-label=\"overlap per group\">", h);
  if (min > 0) {
    double mx = x0 + w * (double)min / max;
    P("<line x1=\"%.1f\" y1=\"14\" x2=\"%.1f\" y2=\"%.1f\" class=\"rule\"/>", mx, mx, h - 4);
    P("<text x=\"%.1f\" y=\"11\" text-anchor=\"middle\" class=\"m\">min_count %lld</text>", mx,
      min);
  }
  json_array_foreach(cells, i, c) {
    double y = top + rh * (double)i;
    const char *lp = label_or_all(str(c, "provider")), *lc = label_or_all(str(c, "consumer"));
    P("<text x=\"0\" y=\"%.1f\">", y + 18);
    if (any_p || !any_c)
      esc_short(f, lp ? lp : "(all)", any_c ? 9 : 19);
    if (any_p && any_c)
      P(" / ");
    if (any_c)
      esc_short(f, lc ? lc : "(all)", any_p ? 9 : 19);
    P("</text>");
    if (json_is_true(json_object_get(c, "suppressed"))) {
      double bw = w * (double)min / max;
      P("<g class=\"cell suppressed\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"20\" "
        "class=\"hatch-stroke\"/>",
        x0, y + 4, bw < 2 ? 2 : bw);
      P("<text x=\"%.1f\" y=\"%.1f\" class=\"m\">suppressed (&lt; min_count)</text></g>\n",
        x0 + (bw < 2 ? 2 : bw) + 8, y + 18);
    } else if (has_int(c, "count")) {
      double bw = w * (double)num(c, "count") / max;
      P("<g class=\"cell released\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"20\" "
        "class=\"both\"/>",
        x0, y + 4, bw < 1 ? 1 : bw);
      P("<text x=\"%.1f\" y=\"%.1f\" class=\"b\">%lld</text></g>\n", x0 + (bw < 1 ? 1 : bw) + 8,
        y + 18, num(c, "count"));
    }
  }
  P("</svg>\n");
  P("<p class=\"legend small muted\"><span><i class=\"sw\" style=\"background:var(--both)\"></i>"
    "released overlap</span><span><svg width=\"11\" height=\"11\" style=\"display:inline;"
    "width:11px;vertical-align:-1px;margin-right:5px\"><rect width=\"11\" height=\"11\" "
    "class=\"hatch-stroke\"/></svg>suppressed: fewer than min_count, value not released</span>"
    "</p>\n");
}

static long long group_size(json_t *groups, const char *label) {
  size_t i;
  json_t *g;
  json_array_foreach(groups, i, g) {
    const char *l = str(g, "label");
    if (l && label && strcmp(l, label) == 0 && has_int(g, "size"))
      return num(g, "size");
  }
  return -1;
}

static void cells_table(FILE *f, json_t *rel) {
  json_t *cells = json_object_get(rel, "cells"), *c;
  json_t *pg = json_object_get(rel, "provider_groups"),
         *cg = json_object_get(rel, "consumer_groups");
  size_t i;
  P("<table><thead><tr><th>provider group</th><th class=\"n\">size</th><th>consumer group</th>"
    "<th class=\"n\">size</th><th class=\"n\">overlap</th><th class=\"n\">of provider group</th>"
    "<th class=\"n\">of consumer group</th></tr></thead><tbody>\n");
  json_array_foreach(cells, i, c) {
    int sup = json_is_true(json_object_get(c, "suppressed"));
    const char *lp = str(c, "provider"), *lc = str(c, "consumer");
    long long sp = group_size(pg, lp), sc = group_size(cg, lc);
    P("<tr class=\"cell %s\"><td>", sup ? "suppressed" : "released");
    esc(f, label_or_all(lp) ? lp : "(all)");
    P("</td><td class=\"n\">");
    if (sp >= 0)
      P("%lld", sp);
    P("</td><td>");
    esc(f, label_or_all(lc) ? lc : "(all)");
    P("</td><td class=\"n\">");
    if (sc >= 0)
      P("%lld", sc);
    P("</td>");
    if (sup)
      P("<td class=\"n\" colspan=\"3\"><span class=\"tag suppressed\">suppressed (&lt; "
        "min_count)</span></td>");
    else {
      P("<td class=\"n\"><strong>%lld</strong></td>", num(c, "count"));
      json_t *a = json_object_get(c, "share_of_provider_group");
      json_t *b = json_object_get(c, "share_of_consumer_group");
      P("<td class=\"n\">");
      if (json_is_number(a))
        P("%.1f%%", 100.0 * json_number_value(a));
      P("</td><td class=\"n\">");
      if (json_is_number(b))
        P("%.1f%%", 100.0 * json_number_value(b));
      P("</td>");
    }
    P("</tr>\n");
  }
  P("</tbody></table>\n");
}

/* ---- differential privacy (docs/privacy.md) ----------------------------- */
/* A noisy release carries "noise": mechanism, epsilon (delta, sigma),
 * scale and error_95 (the true value is within +-error_95 of each released
 * number with probability 95%). */
static void dp_run(FILE *f, json_t *rel) {
  json_t *n = json_is_object(rel) ? json_object_get(rel, "noise") : NULL;
  if (!json_is_object(n))
    return;
  const char *mech = str(n, "mechanism");
  P("<div class=\"dp\"><strong>Noisy release.</strong> ");
  esc(f, mech ? mech : "noise");
  if (json_is_number(json_object_get(n, "epsilon")))
    P(", &epsilon; %.6g spent by this run", json_number_value(json_object_get(n, "epsilon")));
  if (json_is_number(json_object_get(n, "delta")))
    P(", &delta; %.3g", json_number_value(json_object_get(n, "delta")));
  if (json_is_number(json_object_get(n, "scale")))
    P(", scale %.6g", json_number_value(json_object_get(n, "scale")));
  if (has_int(n, "error_95"))
    P("; the true value is within &plusmn;%lld of each released number with 95%% probability",
      num(n, "error_95"));
  P("</div>\n");
}

/* Epsilon spent under the collaboration (every admitted noisy run, from
 * session_started); -1 if none. */
static double dp_spent(json_t *c) {
  json_t *sum = json_object_get(c, "privacy_spent_micro");
  return json_is_integer(sum) ? (double)json_integer_value(sum) / (double)CR_DP_EPSILON_UNIT : -1;
}

/* ---- gauges --------------------------------------------------------------- */

static void gauge(FILE *f, double used, double max, const char *label) {
  double frac = max > 0 ? used / max : 0;
  if (frac > 1)
    frac = 1;
  const char *cls = frac >= 1 ? "var(--bad)" : frac >= 0.8 ? "var(--warn)" : "var(--both)";
  P("<svg viewBox=\"0 0 320 36\" style=\"max-width:320px\" role=\"img\" aria-label=\"");
  esc(f, label);
  P("\"><rect x=\"0\" y=\"20\" width=\"320\" height=\"12\" class=\"track\"/>"
    "<rect x=\"0\" y=\"20\" width=\"%.1f\" height=\"12\" style=\"fill:%s\"/>"
    "<text x=\"0\" y=\"14\">",
    320 * frac, cls);
  esc(f, label);
  P("</text></svg>");
}

/* ---- sections ------------------------------------------------------------- */

static json_t *latest_completed(json_t *runs) {
  for (size_t i = json_array_size(runs); i-- > 0;) {
    json_t *r = json_array_get(runs, i);
    const char *o = str(r, "outcome");
    if (strcmp(o, "released") == 0 || strcmp(o, "suppressed") == 0 || strcmp(o, "nothing") == 0)
      return r;
  }
  return NULL;
}

static void query_section(FILE *f, json_t *c, json_t *q, const cr_report_input *inp, int tmpl_ok) {
  const char *name = str(q, "name");
  json_t *runs = json_object_get(q, "runs");
  const cr_query *tq = tmpl_ok ? cr_template_query(inp->tmpl, name) : NULL;
  P("<section class=\"query\"><h3>Query <code>");
  esc(f, name[0] ? name : "(none)");
  P("</code></h3>\n<p class=\"small muted\">");
  if (tq != NULL) {
    P("%s", tq->kind == CR_QUERY_MEMBERS ? "members" : "count");
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      if (tq->group_by[r]) {
        P(", grouped by the %s&#39;s <code>", cr_role_name((cr_role)r));
        esc(f, tq->group_by[r]);
        P("</code>");
      }
    P("; results only if at least %llu (min_count)", (unsigned long long)tq->min_count);
  } else if (tmpl_ok) {
    P("not a query of this template (a run of it can only have been refused)");
  } else {
    P("(pass <code>--template</code> for the query&#39;s definition)");
  }
  P("</p>\n");

  /* Run limit: session_started counts, as the party counts them. */
  long long started = num(q, "sessions_started");
  P("<div class=\"grid2\"><div>\n");
  json_t *last = latest_completed(runs);
  if (last != NULL) {
    P("<h4>Latest result · ");
    time_text(f, str(last, "time"));
    P(" UTC</h4>\n");
    json_t *rel = json_object_get(last, "released");
    if (json_is_object(rel) && json_is_array(json_object_get(rel, "cells"))) {
      cells_svg(f, rel);
    } else {
      overlap_svg(f, last);
      if (json_is_object(rel) && str(rel, "rows_file")) {
        P("<p><strong>%lld rows written to <code>", num(rel, "rows"));
        esc(f, str(rel, "rows_file"));
        P("</code></strong> <span class=\"muted small\">(the matched rows stay in that file; "
          "this report shows none)</span></p>\n");
      }
    }
    dp_run(f, rel);
  } else {
    P("<h4>Latest result</h4><p class=\"muted\">No completed run in this log.</p>\n");
  }
  P("</div><div>\n<h4>Run limit</h4>\n");
  char label[160];
  if (tq != NULL && inp->tmpl->limits.max_runs_per_query > 0) {
    unsigned long long max = inp->tmpl->limits.max_runs_per_query;
    snprintf(label, sizeof label, "%lld of %llu runs used (%llu left)", started, max,
             (unsigned long long)started >= max ? 0ULL : max - (unsigned long long)started);
    gauge(f, (double)started, (double)max, label);
    P("<p class=\"small muted\">limits.max_runs_per_query, counted from this log&#39;s "
      "session_started events as the node counts them.</p>\n");
  } else {
    P("<p><strong>%lld</strong> run%s started. <span class=\"small muted\">%s</span></p>\n",
      started, started == 1 ? "" : "s",
      tq != NULL ? "The template sets no run limit."
                 : "Pass --template to compare with limits.max_runs_per_query.");
  }
  P("</div></div>\n");

  if (last != NULL) {
    json_t *rel = json_object_get(last, "released");
    if (json_is_object(rel) && json_is_array(json_object_get(rel, "cells")))
      cells_table(f, rel);
  }

  P("<h4>Runs</h4>\n<table><thead><tr><th>time (UTC)</th><th>parameters</th>"
    "<th class=\"n\">our set</th><th class=\"n\">partner&#39;s set</th><th>outcome</th>"
    "<th>result</th></tr></thead><tbody>\n");
  size_t i;
  json_t *r;
  json_array_foreach(runs, i, r) {
    const char *o = str(r, "outcome");
    P("<tr><td class=\"t\">");
    time_text(f, str(r, "time"));
    P("</td><td>");
    params_text(f, json_object_get(r, "params"));
    P("</td><td class=\"n\">");
    if (has_int(r, "own_set_size"))
      P("%lld", num(r, "own_set_size"));
    P("</td><td class=\"n\">");
    if (has_int(r, "peer_set_size"))
      peer_size_text(f, r);
    P("</td><td><span class=\"tag %s\">%s</span></td><td>", o, outcome_label(o));
    result_text(f, r);
    P("</td></tr>\n");
  }
  P("</tbody></table>\n</section>\n");
  (void)c;
}

static const char *event_title(const char *ev) {
  if (strcmp(ev, "serve_refused") == 0)
    return "serving refused";
  if (strcmp(ev, "run_refused") == 0)
    return "run refused";
  if (strcmp(ev, "template_refused") == 0)
    return "template refused";
  if (strcmp(ev, "connection_refused") == 0)
    return "connection refused";
  if (strcmp(ev, "run_failed") == 0)
    return "run failed";
  if (strcmp(ev, "data_load_failed") == 0)
    return "data not loaded";
  if (strcmp(ev, "audit_repaired") == 0)
    return "log repaired after a crash";
  return ev;
}

static void party_card(FILE *f, const char *title, const char *org, const char *role,
                       const char *fp, const char *pinned) {
  P("<div class=\"party\"><div class=\"small muted\">%s</div><div class=\"org\">", title);
  if (org)
    esc(f, org);
  else
    P("<span class=\"muted\">organisation not named (pass --template)</span>");
  P("</div><div class=\"small\">role: ");
  esc(f, role ? role : "unknown");
  P(" · certificate ");
  fp_short(f, fp ? fp : pinned);
  if (fp && pinned && strcmp(fp, pinned) != 0)
    P(" <span class=\"tag refused\">not the template&#39;s pin</span>");
  P("</div></div>\n");
}

static void collab_section(FILE *f, json_t *c, const cr_report_input *inp,
                           const cr_report_integrity *in) {
  const char *th = str(c, "template_sha256");
  int tmpl_ok = inp->tmpl != NULL && inp->tmpl_hash && strcmp(inp->tmpl_hash, th) == 0;
  const char *role = first_key(json_object_get(c, "roles"));
  cr_role own = CR_ROLE_CONSUMER;
  int role_known = role != NULL && cr_role_parse(role, &own) == 0;
  cr_role other = own == CR_ROLE_CONSUMER ? CR_ROLE_PROVIDER : CR_ROLE_CONSUMER;
  P("<section class=\"collab\"><h2>");
  if (tmpl_ok && inp->tmpl->name)
    esc(f, inp->tmpl->name);
  else {
    P("Collaboration <code>");
    esc(f, th[0] ? th : "unknown");
    P("</code>");
  }
  P("</h2>\n");
  if (in->bad_line)
    P("<p class=\"partial\">Built from lines 1–%llu only: the log breaks at line %llu "
      "(see above).</p>\n",
      (unsigned long long)in->bad_line - 1, (unsigned long long)in->bad_line);
  P("<p class=\"small\">template <code>");
  esc(f, th);
  P("</code>");
  const char *tf = first_key(json_object_get(c, "template_files"));
  if (tf) {
    P(" · file <code>");
    esc(f, tf);
    P("</code>");
  }
  P("</p>\n<div class=\"parties\">\n");
  char pin_own[65] = "", pin_peer[65] = "";
  if (tmpl_ok && role_known) {
    cr_hex_encode(pin_own, inp->tmpl->parties[own].cert_sha256, CR_SHA256_BYTES);
    cr_hex_encode(pin_peer, inp->tmpl->parties[other].cert_sha256, CR_SHA256_BYTES);
  }
  party_card(f, "this node", tmpl_ok && role_known ? inp->tmpl->parties[own].org : NULL, role,
             first_key(json_object_get(c, "own_certs")), pin_own[0] ? pin_own : NULL);
  party_card(f, "partner", tmpl_ok && role_known ? inp->tmpl->parties[other].org : NULL,
             role_known ? cr_role_name(other) : NULL, first_key(json_object_get(c, "peer_certs")),
             pin_peer[0] ? pin_peer : NULL);
  P("</div>\n");
  if (json_object_size(json_object_get(c, "peer_certs")) > 1)
    P("<p class=\"small\"><span class=\"tag refused\">note</span> more than one partner "
      "certificate appears in this collaboration&#39;s entries.</p>\n");

  /* The privacy budget: only when the log records epsilon (see dp_run). */
  double spent = dp_spent(c);
  if (spent >= 0 && tmpl_ok && inp->tmpl->limits.privacy_budget.epsilon > 0) {
    double total = (double)inp->tmpl->limits.privacy_budget.epsilon / (double)CR_DP_EPSILON_UNIT;
    P("<p><strong>Privacy budget:</strong> &epsilon; %.6g of %.6g spent over the runs below, "
      "%.6g left (limits.privacy_budget, counted from this log&#39;s session_started "
      "lines).</p>\n",
      spent, total, total > spent ? total - spent : 0.0);
  } else if (spent >= 0)
    P("<p><strong>Privacy budget:</strong> &epsilon; %.6g spent over the runs below.</p>\n", spent);
  else
    P("<p class=\"small muted\">Privacy budget: none in use (no differential privacy in this "
      "log; counts are exact and protected by min_count).</p>\n");

  json_t *order = json_object_get(c, "query_order"), *qs = json_object_get(c, "queries"), *v;
  size_t i;
  json_array_foreach(order, i, v) {
    query_section(f, c, json_object_get(qs, json_string_value(v)), inp, tmpl_ok);
  }
  if (json_array_size(order) == 0)
    P("<p class=\"muted\">No query was run under this template in this log.</p>\n");

  json_t *evs = json_object_get(c, "events"), *e;
  if (json_array_size(evs) > 0) {
    P("<h3>Other refusals and failures</h3>\n<table><thead><tr><th>time (UTC)</th>"
      "<th>what</th><th>from</th><th>reason</th></tr></thead><tbody>\n");
    json_array_foreach(evs, i, e) {
      P("<tr><td>");
      time_text(f, str(e, "time"));
      P("</td><td><span class=\"tag %s\">%s</span></td><td>",
        strcmp(str(e, "event"), "audit_repaired") == 0 ? "withheld" : "refused",
        event_title(str(e, "event")));
      const char *from = str(e, "address") ? str(e, "address") : str(e, "peer");
      if (from)
        esc(f, from);
      if (str(e, "peer_cert_sha256")) {
        P(" ");
        fp_short(f, str(e, "peer_cert_sha256"));
      }
      if (str(e, "file")) {
        P("<code>");
        esc(f, str(e, "file"));
        P("</code>");
      }
      P("</td><td>");
      esc(f, str(e, "reason") ? str(e, "reason") : "");
      if (str(e, "wire_error")) {
        P(" <code class=\"muted\">");
        esc(f, str(e, "wire_error"));
        P("</code>");
      }
      P("</td></tr>\n");
    }
    P("</tbody></table>\n");
  }
  P("</section>\n");
}

static void integrity_banner(FILE *f, const cr_report_model *m, const cr_report_integrity *in) {
  const cr_audit_report *r = &in->report;
  if (in->ok || in->warn) {
    P("<div class=\"banner%s\"><strong class=\"v\">%s</strong> ", in->warn ? " warn" : "",
      in->warn ? "&#9888; Audit log verified, with a warning (below):"
               : "&#10003; Audit log verified:");
    P("%llu entries, %llu signed checkpoints, %llu partner receipts, signed by ",
      (unsigned long long)m->entries, (unsigned long long)r->checkpoints,
      (unsigned long long)m->receipts);
    if (in->signer[0]) {
      fp_short(f, in->signer);
      P(" %s", in->signer_expected ? "(this node&#39;s identity certificate)"
                                   : "(the certificate this node started with)");
    } else if (r->checkpoints == 0)
      P("<strong>nobody: the log has no checkpoint</strong>");
    else
      P("<strong>a key no node_started entry names</strong>");
    P(".");
    if (r->unsigned_tail)
      P(" <span class=\"muted\">The last %llu entries are chained but not yet covered by a "
        "checkpoint.</span>",
        (unsigned long long)r->unsigned_tail);
    if (in->warn) {
      P("<br><span class=\"small\">");
      esc(f, in->reason);
      P("</span>");
    }
    P("<br><span class=\"small muted\">Head <code>");
    esc(f, r->head);
    P("</code>: compare with a copy kept elsewhere or the partner&#39;s receipts to see "
      "that no lines were cut off the end.</span></div>\n");
    return;
  }
  P("<div class=\"banner bad\"><strong class=\"v\">&#10007; The audit log does not verify");
  if (in->bad_line)
    P(" at line %llu", (unsigned long long)in->bad_line);
  P(".</strong> ");
  esc(f, in->reason);
  if (in->bad_line > 1)
    P("<br>Only lines 1–%llu are shown below: they verified (%llu entries). Nothing from line "
      "%llu on is used.",
      (unsigned long long)in->bad_line - 1, (unsigned long long)m->entries,
      (unsigned long long)in->bad_line);
  else
    P("<br>Nothing in the log can be shown.");
  P("</div>\n");
}

int cr_report_html(FILE *f, const cr_report_model *m, const cr_report_integrity *in,
                   const cr_report_input *inp) {
  P("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<meta name=\"generator\" content=\"%s\">\n<title>Clean-room report",
    CR_SOFTWARE);
  if (inp->tmpl && inp->tmpl->name) {
    P(" · ");
    esc(f, inp->tmpl->name);
  }
  P("</title>\n<style>\n%s</style>\n</head><body>\n", CSS);
  defs(f);
  P("<header><h1>Clean-room report</h1><div class=\"small muted\">From the audit log <code>");
  esc(f, inp->audit_path);
  P("</code> · generated ");
  esc(f, inp->generated_time);
  P(" · %s · built from this node&#39;s audit log only: no data file was read</div></header>\n",
    CR_SOFTWARE);
  integrity_banner(f, m, in);

  size_t i, shown = 0;
  json_t *c;
  json_array_foreach(m->collabs, i, c) {
    const char *th = str(c, "template_sha256");
    if (inp->collaboration && strncmp(th, inp->collaboration, strlen(inp->collaboration)) != 0)
      continue;
    /* A collaboration with nothing but a start (a ping, a refused
     * template) still shows: who started and why it stopped. */
    collab_section(f, c, inp, in);
    shown++;
  }
  if (shown == 0)
    P("<p class=\"muted\">The log holds no collaboration%s.</p>\n",
      inp->collaboration ? " with that template hash" : "");
  P("<footer>How to read this page: <em>released</em> numbers are exactly what this node was "
    "given and recorded in its audit log; <em>suppressed</em> results were below the "
    "query&#39;s min_count, so no value exists anywhere, here or in the log; a partner&#39;s "
    "size may be a bucket when the template says so. Times are UTC. Fingerprints are "
    "shortened; hover for the full value.</footer>\n</body></html>\n");
  return ferror(f) ? -1 : 0;
}
