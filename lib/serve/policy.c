/*
 * policy.c - a key's "allow" rules against a caller's claims.
 *
 * A rule is an object of claim names and wanted values; it matches when
 * every field matches the identity's claim of that name: string equality,
 * or a glob when the value contains '*' ('*' matches any run of characters,
 * '/' and ':' included). An array claim (aud, groups) matches when any
 * element does; numbers and booleans compare in their JSON text form. A key
 * is usable when any rule matches, and by nobody without rules.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "serve/authn.h"
#include "serve/policy.h"

/* Claims that say which kind of caller a rule is for. */
static const char *const policy_anchors[] = {"iss", "api_token", "mtls_subject", NULL};

/* Whether text matches pattern, where '*' matches any run of characters.
 * Greedy with one backtrack point: O(len(text) * len(pattern)) at worst. */
static bool policy_glob(const char *pattern, const char *text)
{
	const char *star = NULL, *resume = NULL;

	while (*text != '\0') {
		if (*pattern == '*') {
			star = pattern++;
			resume = text;
		} else if (*pattern == *text) {
			pattern++;
			text++;
		} else if (star != NULL) {
			pattern = star + 1;
			text = ++resume;
		} else {
			return false;
		}
	}
	while (*pattern == '*')
		pattern++;
	return *pattern == '\0';
}

/* A scalar claim as text in buf: strings as they are, integers and
 * booleans in JSON form; NULL for anything else. */
static const char *policy_scalar(const json_t *v, char *buf, size_t len)
{
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
		return buf;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "true" : "false";
	return NULL;
}

static bool policy_value_matches(const char *want, const json_t *claim)
{
	char buf[32];
	const char *have;
	size_t i;
	json_t *v;

	if (json_is_array(claim)) {
		json_array_foreach(claim, i, v)
		{
			if (!json_is_array(v) && policy_value_matches(want, v))
				return true;
		}
		return false;
	}
	if ((have = policy_scalar(claim, buf, sizeof(buf))) == NULL)
		return false;
	return strchr(want, '*') ? policy_glob(want, have) : strcmp(want, have) == 0;
}

/* One rule's shape; why says what is wrong with it. */
static int policy_check_rule(const json_t *rule, size_t idx, char *why, size_t why_len)
{
	bool anchored = false;
	const char *field;
	const json_t *want;

	if (!json_is_object(rule) || json_object_size(rule) == 0) {
		snprintf(why, why_len, "allow[%zu]: must be a non-empty object", idx);
		return HS_ERR_INVALID;
	}
	json_object_foreach((json_t *)rule, field, want)
	{
		if (!json_is_string(want)) {
			snprintf(why, why_len, "allow[%zu].%.64s: must be a string", idx, field);
			return HS_ERR_INVALID;
		}
		for (size_t k = 0; policy_anchors[k] != NULL; k++)
			anchored |= strcmp(field, policy_anchors[k]) == 0;
	}
	if (!anchored) {
		snprintf(why, why_len,
		         "allow[%zu]: must name \"iss\", \"api_token\" or "
		         "\"mtls_subject\"",
		         idx);
		return HS_ERR_INVALID;
	}
	return 0;
}

int hs_policy_validate(const json_t *rules, char *why, size_t why_len)
{
	int r;

	if (why_len > 0)
		why[0] = '\0';
	if (rules == NULL)
		return 0;
	if (!json_is_array(rules)) {
		snprintf(why, why_len, "allow: must be an array of rules");
		return HS_ERR_INVALID;
	}
	for (size_t i = 0; i < json_array_size(rules); i++)
		if ((r = policy_check_rule(json_array_get(rules, i), i, why, why_len)) < 0)
			return r;
	return 0;
}

/* The first field of rule the claims do not satisfy, or NULL when all do. */
static const char *policy_mismatch(const json_t *rule, const json_t *claims)
{
	const char *field;
	const json_t *want;

	json_object_foreach((json_t *)rule, field, want)
	{
		if (!policy_value_matches(json_string_value(want), json_object_get(claims, field)))
			return field;
	}
	return NULL;
}

/* Whether the rule's anchor fields (iss, api_token, mtls_subject) all match:
 * then its mismatch is the one worth reporting. */
static bool policy_anchor_matches(const json_t *rule, const json_t *claims)
{
	bool any = false;

	for (size_t k = 0; policy_anchors[k] != NULL; k++) {
		const json_t *want = json_object_get(rule, policy_anchors[k]);

		if (want == NULL)
			continue;
		if (!policy_value_matches(json_string_value(want),
		                          json_object_get(claims, policy_anchors[k])))
			return false;
		any = true;
	}
	return any;
}

/* why: "claim 'ref' is 'refs/heads/dev', not allowed (rule 2)". */
static void policy_explain(const json_t *claims, const char *field, size_t rule, char *why,
                           size_t why_len)
{
	const json_t *have = json_object_get(claims, field);
	char buf[32];
	const char *text = policy_scalar(have, buf, sizeof(buf));

	if (have == NULL)
		snprintf(why, why_len, "claim '%.64s' missing (allow rule %zu)", field, rule + 1);
	else if (text != NULL)
		snprintf(why, why_len, "claim '%.64s' is '%.100s', not allowed (allow rule %zu)",
		         field, text, rule + 1);
	else
		snprintf(why, why_len, "claim '%.64s' does not match (allow rule %zu)", field,
		         rule + 1);
}

int hs_policy_allows(const json_t *rules, const struct hs_identity *id, char *why, size_t why_len)
{
	const char *reported = NULL;
	size_t reported_rule = 0;
	bool reported_anchored = false;
	int r;

	if (why_len > 0)
		why[0] = '\0';
	if ((r = hs_policy_validate(rules, why, why_len)) < 0)
		return r;
	if (json_array_size(rules) == 0) {
		snprintf(why, why_len, "the key has no allow rules (deny by default)");
		return 0;
	}
	if (id == NULL || !json_is_object(id->claims)) {
		snprintf(why, why_len, "no caller identity");
		return 0;
	}
	for (size_t i = 0; i < json_array_size(rules); i++) {
		const json_t *rule = json_array_get(rules, i);
		const char *field = policy_mismatch(rule, id->claims);
		bool anchored;

		if (field == NULL) {
			snprintf(why, why_len, "allow rule %zu", i + 1);
			return 1;
		}
		/* Report the first rule meant for this caller (its iss, token or
		 * subject matched), else the first rule. */
		anchored = policy_anchor_matches(rule, id->claims);
		if (reported == NULL || (anchored && !reported_anchored)) {
			reported = field;
			reported_rule = i;
			reported_anchored = anchored;
		}
	}
	policy_explain(id->claims, reported, reported_rule, why, why_len);
	return 0;
}
