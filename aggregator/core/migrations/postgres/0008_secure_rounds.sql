-- Secure rounds (issue 22) and the event day a round's data belongs to
-- (issue 18 item 4: ledgers are charged on it, not on the closing day).
-- `secure_json` holds the public SecAgg+ parameters (threshold, graph
-- seed, gamma, n_max, dimension, stage timeout); NULL for plain rounds.
-- `secure_owner` is the aggregator process running the round's stages
-- (their state is in its memory): other replicas refuse its calls.
-- Nothing secret is stored: masked inputs are summed in memory.
ALTER TABLE rounds ADD COLUMN event_day TEXT;
ALTER TABLE rounds ADD COLUMN secure_json TEXT;
ALTER TABLE rounds ADD COLUMN secure_owner TEXT;
