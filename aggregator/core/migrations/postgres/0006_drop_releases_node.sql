-- No query reads releases by (venue, node, sequence); the index only cost
-- one more b-tree insert per accepted release on the ingest path.
DROP INDEX IF EXISTS releases_node;
