# shellcheck shell=bash
# Shared by examples/rideshare and examples/multikey (sourced after
# lib/run.sh): the same two parties on the example's own data. The Harbor
# City Hawks (provider) work in WORK/team with team.csv, RideNow (consumer)
# in WORK/app with app.csv.

# team_and_app: both identities and the pinned template in each directory
# (fingerprints in P_FP and C_FP).
team_and_app() {
  two_dirs "$EX/template.json" team "Harbor City Hawks" app RideNow
}

# team_serves: the team's node serves its season-ticket holders.
team_serves() {
  cd "$WORK/team"
  start_node "the team's node" team.out team.err \
    --template template.json --identity identity --data "$EX/team.csv"
}

# app QUERY [flags]: RideNow runs QUERY from WORK/app and shows what it got.
app() {
  run_shown RideNow "$WORK/app" "$1" --template template.json --identity identity \
    --data "$EX/app.csv" --query "$@"
}
