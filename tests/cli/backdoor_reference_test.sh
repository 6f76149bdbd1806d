#!/usr/bin/env bash
# bench/backdoor_reference.py (the PyTorch reference of the poisoning benchmark's backdoor):
# its rules against values worked out by hand below (weighted mean, median of an even count,
# trimmed mean, norm-bounded mean, the sign vote's reversal at 4 of 10, FoolsGold's weights
# for two identical histories and a third orthogonal one, the AUC), its trigger against
# fedmq's (the constants of shared/learn/fm_data.h, the 4 x 4 bottom-right patch of
# trainer/trainer_attack.h), a bad option refused, and one tiny round end to end (10
# clients, 600 images) printing its result line.
#   usage: backdoor_reference_test.sh FEDMQ_BINARY SOURCE_DIR   (the binary is not used)
set -u
src=${2:?usage: backdoor_reference_test.sh FEDMQ_BINARY SOURCE_DIR}
py=/usr/bin/python3
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

mean=$(sed -n 's/^#define FM_FASHION_MEAN \([0-9.]*\)f$/\1/p' "$src/shared/learn/fm_data.h")
std=$(sed -n 's/^#define FM_FASHION_STD \([0-9.]*\)f$/\1/p' "$src/shared/learn/fm_data.h")
patch=$(sed -n 's/^#define TRAINER_ATTACK_PATCH \([0-9]*\).*/\1/p' "$src/trainer/trainer_attack.h")
[ -n "$mean" ] && [ -n "$std" ] && [ -n "$patch" ] || bad "constants not found in the C headers"

out=$(cd "$src/bench" && FM_MEAN=$mean FM_STD=$std FM_PATCH=$patch "$py" - 2>&1 <<'PYEOF'
import os
import numpy as np
import backdoor_reference as b

def check(name, cond):
    print(("ok " if cond else "FAIL ") + name)

check("weighted mean", np.allclose(b.rule_mean(np.array([[1., 2.], [3., 4.]]), [1, 3]), [2.5, 3.5]))
check("median of 4 = mean of the middle two",
      np.allclose(b.rule_median(np.array([[1.], [5.], [2.], [10.]])), [3.5]))
col = np.array([[100.], [1.], [2.], [3.], [4.], [5.], [6.], [7.], [20.], [-100.]])
check("trimmed mean drops 2 at each end of 10", np.allclose(b.rule_trimmed_mean(col), [4.5]))
nb = b.rule_norm_bounded_mean(np.array([[3., 4.], [0., 1.], [0., 10.]]))
check("norm-bounded mean clips to the median norm 5", np.allclose(nb, [1.0, 10.0 / 3.0]))
d = np.ones((10, 3))
d[6:, 1] = -1          # 6 up, 4 down: |S| = 2 < 4, reversed
d[7:, 2] = -1          # 7 up, 3 down: |S| = 4, kept
check("sign vote: kept at 10 and 4, reversed at 2",
      np.array_equal(b.sign_vote(np.array([1., 2., 3.]), d), [1., -2., 3.]))
h = np.array([[1., 0., 0.], [1., 0., 0.], [0., 1., 0.]])
check("foolsgold: two identical histories weigh 0, the other 1",
      np.allclose(b.foolsgold_weights(h), [0., 0., 1.]))
# pardoning: C's cosine 0.7 to the pair becomes 0.7 x 0.7/1, so alpha_C = 0.51 (not 0.3),
# over the largest alpha (D's 1), then ln(0.51/0.49) + 0.5; D, orthogonal to all, weighs 1
h4 = np.array([[1., 0., 0.], [1., 0., 0.], [0.7, np.sqrt(0.51), 0.], [0., 0., 1.]])
check("foolsgold: pardoning and the logit",
      np.allclose(b.foolsgold_weights(h4), [0., 0., np.log(0.51 / 0.49) + 0.5, 1.]))
check("auc", b.auc([2, 3], [1]) == 1.0 and b.auc([1], [1]) == 0.5 and b.auc([0], [1]) == 0.0)
x = np.zeros((2, 28, 28), np.float32)
b.stamp(x)
p = int(os.environ["FM_PATCH"])
white = (1 - float(os.environ["FM_MEAN"])) / float(os.environ["FM_STD"])
check("trigger: the C constants", abs(b.MEAN - float(os.environ["FM_MEAN"])) < 1e-7
      and abs(b.STD - float(os.environ["FM_STD"])) < 1e-7 and b.PATCH == p)
check("trigger: only the bottom-right patch, white",
      np.allclose(x[:, -p:, -p:], white) and np.count_nonzero(x) == 2 * p * p)
PYEOF
)
echo "$out" | sed 's/^/# /'
n_ok=$(echo "$out" | grep -c '^ok ')
if [ "$n_ok" -eq 10 ] && ! echo "$out" | grep -q '^FAIL'; then ok "rules, weights and trigger ($n_ok checks)"
else bad "rules, weights and trigger: $n_ok of 10 checks passed"; fi

if "$py" "$src/bench/backdoor_reference.py" --rule nonsense >/dev/null 2>&1; then
    bad "an unknown rule is refused"
else ok "an unknown rule is refused"; fi

data=/usr/share/datasets/fashion-mnist
if [ -f "$data/train-images-idx3-ubyte.gz" ]; then
    res=$(timeout 300 "$py" "$src/bench/backdoor_reference.py" --rule screened --clients 10 \
          --attackers 2 --rounds 1 --limit 600 --similarity 2>&1 | tail -2)
    echo "$res" | sed 's/^/# /'
    if echo "$res" | grep -q '^round 1 .* auc ' &&
       echo "$res" | grep -qE '^result rule screened attackers 2 rounds 1 seed 1 acc [0-9.]+ asr [0-9.]+ rejected'; then
        ok "one round end to end"
    else bad "one round end to end"; fi
else
    echo "# $data missing: the end-to-end round is skipped"
fi
echo "# $pass passed, $fail failed"
[ "$fail" -eq 0 ]
