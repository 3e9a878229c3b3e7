/* html.c — HTML to plain text with libxml2's HTML parser.
 *
 * The parser (error-recovering, network off) builds a tree; one walk over
 * it writes text: block elements (p, div, headings, list items, table
 * rows...) end lines, inline whitespace collapses to single spaces, and
 * <pre> keeps its own line breaks. Boilerplate goes three ways: elements
 * that never hold content (script, style, nav, header, footer, form,
 * aside, ...), elements whose role, class or id names navigation (menu,
 * sidebar, breadcrumb, cookie banner...), and link-dense blocks — a block
 * whose kept text is more than half link text is taken back out of the
 * output after it was written, so nested blocks are judged innermost
 * first. The result is what a reader sees of the page's content, one
 * paragraph per line, as Common Crawl's WET text is, minus its menus.
 *
 * Workload: pages of tens to hundreds of KB, parsed once; the walk is
 * linear in the tree.
 */
#include "ingest/internal.h"

#include <libxml/HTMLparser.h>
#include <libxml/xmlerror.h>
#include <string.h>
#include <strings.h>

static void silent(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}
static void silent_s(void *ctx, xmlErrorPtr e)
{
    (void)ctx;
    (void)e;
}

void ingest_xml_quiet(void)
{
    xmlSetGenericErrorFunc(NULL, silent);
    xmlSetStructuredErrorFunc(NULL, silent_s);
}

typedef struct {
    ingest_buf_t *out;
    int space;       /* a space is pending */
    int pre;         /* inside <pre> */
    int in_link;
    size_t link_chars;
    size_t text_chars;
    size_t links;       /* <a> elements with text */
} walk_t;

static int is_name(const xmlNode *n, const char *const *names)
{
    const char *nm = (const char *)n->name;
    for (int i = 0; names[i]; i++)
        if (nm[0] == names[i][0] && !strcmp(nm, names[i]))
            return 1;
    return 0;
}

static const char *const drop_tags[] = {
    "script", "style", "noscript", "nav", "header", "footer", "form", "aside", "iframe", "svg",
    "button", "select", "textarea", "input", "template", "object", "embed", "canvas", "menu",
    "head", "label", "math", "audio", "video", "map", "dialog", "fieldset", NULL};
static const char *const block_tags[] = {
    "p", "div", "section", "article", "main", "blockquote", "ul", "ol", "li", "dl", "dt", "dd",
    "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "address", "figure", "figcaption",
    "center", "body", "html", "caption", "thead", "tbody", "tfoot", "hr", "details", "summary", NULL};
/* Blocks judged for link density. */
static const char *const dense_tags[] = {"div", "ul", "ol", "table", "tr", "dl", "section", "tbody", NULL};
/* Items judged alone: dropped when short and mostly link (a menu entry). */
static const char *const item_tags[] = {"li", "td", "th", "dt", "dd", NULL};
static const char *const nav_words[] = {"nav", "menu", "sidebar", "footer", "breadcrumb", "cookie", "banner",
                                        "masthead", "toolbar", "pagination", "skip-link", "share", "social",
                                        "catlinks", "printfooter", "mw-jump", "noprint", "navbox", "related",
                                        "advert", "sponsor", "subscribe", "newsletter", "comment", "login",
                                        "editsection", NULL};

static int has_boilerplate_attr(const xmlNode *n)
{
    if (!strcmp((const char *)n->name, "body") || !strcmp((const char *)n->name, "html") ||
        !strcmp((const char *)n->name, "main") || !strcmp((const char *)n->name, "article"))
        return 0;
    for (const xmlAttr *a = n->properties; a; a = a->next) {
        const char *an = (const char *)a->name;
        int cls = !strcasecmp(an, "class") || !strcasecmp(an, "id");
        int role = !strcasecmp(an, "role");
        int hidden = !strcasecmp(an, "hidden") || !strcasecmp(an, "aria-hidden");
        if (!cls && !role && !hidden)
            continue;
        const xmlNode *t = a->children;
        const char *v = t && t->content ? (const char *)t->content : "";
        if (hidden && (!strcasecmp(an, "hidden") || !strcasecmp(v, "true")))
            return 1;
        if (role && (!strcasecmp(v, "navigation") || !strcasecmp(v, "banner") || !strcasecmp(v, "contentinfo") ||
                     !strcasecmp(v, "search") || !strcasecmp(v, "menu") || !strcasecmp(v, "complementary")))
            return 1;
        if (cls) {
            /* token-wise: any class/id token containing a boilerplate word */
            char tok[128];
            const char *p = v;
            while (*p) {
                while (*p == ' ' || *p == '\t')
                    p++;
                size_t k = 0;
                while (p[k] && p[k] != ' ' && p[k] != '\t')
                    k++;
                if (k && k < sizeof tok) {
                    memcpy(tok, p, k);
                    tok[k] = 0;
                    for (char *q = tok; *q; q++)
                        if (*q >= 'A' && *q <= 'Z')
                            *q = (char)(*q + 32);
                    for (int i = 0; nav_words[i]; i++)
                        if (strstr(tok, nav_words[i]))
                            return 1;
                }
                p += k;
            }
        }
    }
    return 0;
}

static void end_line(walk_t *w)
{
    ingest_buf_t *o = w->out;
    while (o->len && o->p[o->len - 1] == ' ')
        o->len--;
    if (o->len && o->p[o->len - 1] != '\n')
        ibuf_putc(o, '\n');
    w->space = 0;
}

static void put_text(walk_t *w, const char *s)
{
    ingest_buf_t *o = w->out;
    size_t n = strlen(s);
    ibuf_reserve(o, n + 1);
    if (w->pre) {
        for (size_t i = 0; i < n; i++) {
            char c = s[i];
            if (c == '\r')
                continue;
            if (c == '\t')
                c = ' ';
            o->p[o->len++] = c;
            if (c != '\n' && c != ' ') {
                w->text_chars++;
                if (w->in_link)
                    w->link_chars++;
            }
        }
        o->p[o->len] = 0;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f') {
            w->space = 1;
            continue;
        }
        /* U+00A0 no-break space as a space */
        if (c == 0xc2 && (unsigned char)s[i + 1] == 0xa0) {
            w->space = 1;
            i++;
            continue;
        }
        if (w->space && o->len && o->p[o->len - 1] != '\n') {
            ibuf_reserve(o, 2);
            o->p[o->len++] = ' ';
        }
        w->space = 0;
        if (o->len + 2 > o->cap)
            ibuf_reserve(o, 2);
        o->p[o->len++] = (char)c;
        if ((c & 0xc0) != 0x80) {
            w->text_chars++;
            if (w->in_link)
                w->link_chars++;
        }
    }
    o->p[o->len] = 0;
}

static void walk(walk_t *w, const xmlNode *n, int depth)
{
    for (; n; n = n->next) {
        if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
            if (n->content)
                put_text(w, (const char *)n->content);
            continue;
        }
        if (n->type != XML_ELEMENT_NODE || !n->name)
            continue;
        if (depth > 400 || is_name(n, drop_tags) || has_boilerplate_attr(n))
            continue;
        const char *name = (const char *)n->name;
        if (!strcmp(name, "br")) {
            if (w->pre)
                ibuf_putc(w->out, '\n');
            else
                end_line(w);
            continue;
        }
        if (!strcmp(name, "img"))
            continue;
        int block = is_name(n, block_tags);
        int dense = is_name(n, dense_tags), item = is_name(n, item_tags);
        int pre = !strcmp(name, "pre");
        int link = !strcmp(name, "a");
        int cell = !strcmp(name, "td") || !strcmp(name, "th");
        if (block)
            end_line(w);
        else if (cell)
            w->space = 1;
        size_t start = w->out->len, t0 = w->text_chars, l0 = w->link_chars, a0 = w->links;
        if (!strcmp(name, "li"))
            ibuf_puts(w->out, "- ");
        int save_pre = w->pre, save_link = w->in_link;
        if (pre) {
            w->pre = 1;
            end_line(w);
        }
        if (link)
            w->in_link = 1;
        walk(w, n->children, depth + 1);
        w->pre = save_pre;
        w->in_link = save_link;
        if (link && w->link_chars > l0)
            w->links++;
        if (dense || item) {
            /* Link density: a block more than half link text is a menu when
             * it is short, or (containers) when its links are many and short;
             * a long link inside prose or a list of references stays. */
            size_t t = w->text_chars - t0, l = w->link_chars - l0, a = w->links - a0;
            int menu = t > 0 && l * 2 > t && (t < 40 || (dense && a >= 3 && l / a < 40));
            if (menu) {
                /* link-dense: take the block back out */
                w->out->len = start;
                if (w->out->p)
                    w->out->p[start] = 0;
                w->text_chars = t0;
                w->link_chars = l0;
                w->links = a0;
                w->space = 0;
                continue;
            }
        }
        if (block || pre)
            end_line(w);
        else if (cell)
            w->space = 1;
    }
}

static const xmlNode *find(const xmlNode *n, const char *name, int depth)
{
    for (; n && depth < 64; n = n->next) {
        if (n->type == XML_ELEMENT_NODE && n->name && !strcmp((const char *)n->name, name))
            return n;
        if (n->type == XML_ELEMENT_NODE && n->name && !strcmp((const char *)n->name, "body"))
            continue;
        const xmlNode *r = find(n->children, name, depth + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* Trims each line, drops empty lines and lines of only "- ". */
static void tidy(ingest_buf_t *b)
{
    size_t r = 0, w = 0;
    while (r < b->len) {
        size_t e = r;
        while (e < b->len && b->p[e] != '\n')
            e++;
        size_t s = r, t = e; /* leading spaces are <pre> indentation: kept */
        while (t > s && (b->p[t - 1] == ' ' || b->p[t - 1] == '\t' || b->p[t - 1] == '\r'))
            t--;
        size_t k = s;
        while (k < t && b->p[k] == ' ')
            k++;
        int empty = k == t || (t - k == 1 && b->p[k] == '-');
        if (!empty) {
            memmove(b->p + w, b->p + s, t - s);
            w += t - s;
            b->p[w++] = '\n';
        }
        r = e + 1;
    }
    if (w && b->p[w - 1] == '\n')
        w--;
    b->len = w;
    if (b->p)
        b->p[w] = 0;
}

int ingest_html_to_text(const char *html, size_t len, ingest_buf_t *out, ingest_buf_t *title)
{
    ibuf_clear(out);
    ibuf_reserve(out, 64);
    if (title)
        ibuf_clear(title);
    if (len > INT32_MAX)
        return GL_ERANGE;
    ingest_xml_quiet();
    htmlDocPtr doc = htmlReadMemory(html, (int)len, NULL, "UTF-8",
                                    HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                        HTML_PARSE_NONET | HTML_PARSE_NOIMPLIED | HTML_PARSE_COMPACT);
    if (!doc)
        return len ? GL_EPARSE : GL_OK;
    const xmlNode *root = xmlDocGetRootElement(doc);
    if (title) {
        const xmlNode *t = find(root, "title", 0);
        if (t) {
            xmlChar *s = xmlNodeGetContent(t);
            if (s) {
                walk_t tw = {.out = title};
                put_text(&tw, (const char *)s);
                xmlFree(s);
            }
        }
    }
    walk_t w = {.out = out};
    for (const xmlNode *n = doc->children; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE)
            walk(&w, n, 0);
        else if (n->type == XML_TEXT_NODE && n->content)
            put_text(&w, (const char *)n->content);
    tidy(out);
    xmlFreeDoc(doc);
    return GL_OK;
}
