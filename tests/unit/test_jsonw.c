// SPDX-License-Identifier: MIT
/* Unit tests of daemon/lib/jsonw.c: on random records its text must be byte for byte what
 * jansson's json_dumps gives (compact, with and without ENSURE_ASCII) and parse back to the
 * same value; what jansson refuses (strings that are not UTF-8, non-finite reals) it
 * refuses too. Every record is built twice in one pass: as a jansson tree and as jw calls. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "jsonw.h"
#include "unit.h"

#define RECORDS 3000
#define OUT_MAX 65536

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

/* Appends one code point as UTF-8, or (rarely, when bad) bytes that are not UTF-8. */
static size_t gen_char(char *s, bool *bad)
{
	uint32_t cp;

	switch (rnd(10)) {
	case 0:
		cp = 1 + rnd(0x1f); /* control bytes */
		break;
	case 1:
		cp = "\"\\/\x7f"[rnd(4)];
		break;
	case 2:
		cp = 0x80 + rnd(0x780); /* two bytes */
		break;
	case 3:
		do
			cp = 0x800 + rnd(0xf800);
		while (cp >= 0xd800 && cp <= 0xdfff);
		break;
	case 4:
		cp = 0x10000 + rnd(0x100000); /* four bytes: surrogate pairs under ASCII */
		break;
	case 5:
		if (bad && rnd(8) == 0) {
			static const char *const invalid[] = {"\xff",	      "\xc0\x80",
							      "\xed\xa0\x80", "\xf4\x90\x80\x80",
							      "\xe2\x82",     "\x80"};
			const char *b = invalid[rnd(sizeof(invalid) / sizeof(invalid[0]))];

			*bad = true;
			memcpy(s, b, strlen(b));
			return strlen(b);
		}
		/* fall through */
	default:
		cp = 0x20 + rnd(0x5f);
		break;
	}
	if (cp < 0x80) {
		s[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		s[0] = (char)(0xc0 | (cp >> 6));
		s[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		s[0] = (char)(0xe0 | (cp >> 12));
		s[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		s[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	s[0] = (char)(0xf0 | (cp >> 18));
	s[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	s[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	s[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static size_t gen_string(char *s, size_t max_chars, bool *bad)
{
	size_t n = 0, chars = rnd((uint32_t)max_chars + 1);

	for (size_t i = 0; i < chars; i++)
		n += gen_char(s + n, bad);
	s[n] = '\0';
	return n;
}

/* One random value, as a tree and as jw calls; *bad when it holds text that is not UTF-8. */
static json_t *gen_value(struct jw *w, int depth, bool *bad);

static json_t *gen_object(struct jw *w, int depth, bool *bad)
{
	json_t *o = json_object();
	int n = (int)rnd(6);

	jw_obj_open(w);
	for (int i = 0; i < n; i++) {
		char key[64];
		/* valid keys only: jansson checks them when set (and its dump would not) */
		size_t kl = gen_string(key, 6, NULL);

		/* jansson keeps one member per key: make each key unique */
		kl += (size_t)snprintf(key + kl, sizeof(key) - kl, "#%d", i);
		jw_keyn(w, key, kl);
		json_object_set_new_nocheck(o, key, gen_value(w, depth + 1, bad));
	}
	jw_obj_close(w);
	return o;
}

static json_t *gen_value(struct jw *w, int depth, bool *bad)
{
	char s[128];
	size_t n;
	json_t *a;

	switch (rnd(depth < 4 ? 9 : 7)) {
	case 0: {
		int64_t v = (int64_t)(((uint64_t)rnd(UINT32_MAX) << 32) | rnd(UINT32_MAX));

		v >>= rnd(63);
		jw_int(w, v);
		return json_integer(v);
	}
	case 1: {
		double v = ldexp((double)rnd(UINT32_MAX) - 2e9, (int)rnd(200) - 100);

		jw_real(w, v);
		return json_real(v);
	}
	case 2:
		jw_bool(w, true);
		return json_true();
	case 3:
		jw_bool(w, false);
		return json_false();
	case 4:
		jw_null(w);
		return json_null();
	case 5:
	case 6:
		n = gen_string(s, 20, bad);
		if (rnd(10) == 0)
			s[n++] = '\0'; /* an embedded NUL: jansson keeps it, as \u0000 */
		jw_strn(w, s, n);
		return json_stringn_nocheck(s, n);
	case 7:
		return gen_object(w, depth, bad);
	default:
		a = json_array();
		jw_arr_open(w);
		for (int i = (int)rnd(5); i > 0; i--)
			json_array_append_new(a, gen_value(w, depth + 1, bad));
		jw_arr_close(w);
		return a;
	}
}

static void one_mode(unsigned jw_flags, size_t jansson_flags)
{
	static char out[OUT_MAX];
	int bad_seen = 0, good_seen = 0;

	for (int i = 0; i < RECORDS; i++) {
		struct jw w;
		bool bad = false;
		json_t *rec, *back;
		char *ref;
		ssize_t n;

		jw_init(&w, out, sizeof(out), jw_flags);
		rec = gen_object(&w, 0, &bad);
		n = jw_end(&w);
		ref = json_dumps(rec, JSON_COMPACT | jansson_flags);
		if (bad) {
			bad_seen++;
			if (ref || n != -EILSEQ) {
				printf("# jw %zd, jansson %s\n", n, ref ? ref : "(refused)");
				free(ref);
				json_decref(rec);
				fail("record %d: not UTF-8 but not refused by both", i);
			}
			json_decref(rec);
			continue;
		}
		good_seen++;
		if (!ref || n < 0 || (size_t)n != strlen(ref) || memcmp(out, ref, (size_t)n) != 0) {
			printf("# jw:      %s\n# jansson: %s\n", n >= 0 ? out : "(error)",
			       ref ? ref : "(refused)");
			free(ref);
			json_decref(rec);
			fail("record %d: texts differ", i);
		}
		free(ref);
		back = json_loadb(out, (size_t)n, JSON_ALLOW_NUL, NULL);
		if (!back || !json_equal(back, rec)) {
			json_decref(back);
			json_decref(rec);
			fail("record %d does not parse back to itself", i);
		}
		json_decref(back);
		json_decref(rec);
	}
	/* the generator must really have made both kinds */
	check(bad_seen > RECORDS / 50 && good_seen > RECORDS / 2);
}

static void test_random_records_match_jansson(void)
{
	one_mode(0, 0);
}

static void test_random_records_match_jansson_ascii(void)
{
	one_mode(JW_ASCII, JSON_ENSURE_ASCII);
}

static void test_replace_invalid_utf8(void)
{
	char out[128];
	struct jw w;

	jw_init(&w, out, sizeof(out), JW_UTF8_REPLACE);
	jw_obj_open(&w);
	jw_key(&w, "r");
	jw_str(&w, "a\xff"
		   "b\xc3\xa9\xe2\x82"
		   "c\xed\xa0\x80");
	jw_obj_close(&w);
	check(jw_end(&w) > 0);
	check_str(out, "{\"r\":\"a?b\xc3\xa9??c???\"}");
}

static void test_errors_are_sticky(void)
{
	char out[8];
	struct jw w;

	jw_init(&w, out, sizeof(out), 0);
	jw_obj_open(&w);
	jw_key(&w, "long");
	jw_str(&w, "value");
	jw_obj_close(&w);
	check(jw_end(&w) == -ENOSPC);
	/* exactly full: the text and its NUL */
	jw_init(&w, out, 3, 0);
	jw_arr_open(&w);
	jw_arr_close(&w);
	check(jw_end(&w) == 2 && strcmp(out, "[]") == 0);
	jw_init(&w, out, 2, 0);
	jw_arr_open(&w);
	jw_arr_close(&w);
	check(jw_end(&w) == -ENOSPC);
	jw_init(&w, out, sizeof(out), 0);
	jw_real(&w, NAN);
	jw_int(&w, 1);
	check(jw_end(&w) == -EDOM);
	jw_init(&w, out, sizeof(out), 0);
	jw_str(&w, "\xff");
	check(jw_end(&w) == -EILSEQ);
}

int main(void)
{
	RUN(test_random_records_match_jansson);
	RUN(test_random_records_match_jansson_ascii);
	RUN(test_replace_invalid_utf8);
	RUN(test_errors_are_sticky);
	return unit_failed;
}
