PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE IF NOT EXISTS "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
INSERT INTO meta VALUES('schema_version','1');
CREATE TABLE IF NOT EXISTS "runs" (
   "run_id" TEXT PRIMARY KEY,
   "stack" TEXT,
   "task" TEXT,
   "status" TEXT,
   "started" REAL,
   "finished" REAL,
   "error" TEXT,
   "pid" INTEGER,
   "host" TEXT,
   "parent_run" TEXT,
   "inputs" TEXT,
   "outputs" TEXT,
   "kind" TEXT
);
INSERT INTO runs VALUES('r1','legacy','legacy.task','succeeded',1796211466.8355894088,1700000001.0,NULL,3819,'vm',NULL,'{"x": 1}',NULL,'program');
CREATE TABLE IF NOT EXISTS "resources" (
   "urn" TEXT PRIMARY KEY,
   "stack" TEXT,
   "type" TEXT,
   "id" TEXT,
   "inputs" TEXT,
   "outputs" TEXT,
   "deps" TEXT,
   "options" TEXT,
   "ephemeral" INTEGER,
   "run_id" TEXT,
   "parent" TEXT,
   "idle_ttl" REAL,
   "last_used" REAL,
   "created" REAL
);
INSERT INTO resources VALUES('urn:engine:legacy::test:store:Thing::a','legacy','test:store:Thing','a','{"labels": {"app.kubernetes.io/name": "a"}, "size": 2}','{"made": "a"}','[]','{"delete_before_replace": false, "ignore_changes": [], "protect": true, "replace_on_changes": [], "resume_on_recover": false, "retain_on_delete": false, "timeouts": {"create": null, "delete": null, "update": null}}',0,NULL,NULL,NULL,1700000000.0,1700000000.0);
CREATE TABLE IF NOT EXISTS "journal" (
   "seq" INTEGER PRIMARY KEY,
   "run_id" TEXT,
   "stack" TEXT,
   "urn" TEXT,
   "type" TEXT,
   "op" TEXT,
   "name" TEXT,
   "status" TEXT,
   "inputs" TEXT,
   "started" REAL,
   "finished" REAL,
   "error" TEXT,
   "reason" TEXT,
   "decl" TEXT
);
INSERT INTO journal VALUES(1,'r1','legacy','urn:engine:legacy::test:store:Thing::a','test:store:Thing','create','a','done','{"labels": {"app.kubernetes.io/name": "a"}, "size": 2}',1796211466.8357782364,1796211466.8360426426,NULL,NULL,'null');
CREATE INDEX "idx_runs_stack_status"
    ON "runs" ("stack", "status");
CREATE INDEX "idx_resources_stack"
    ON "resources" ("stack");
CREATE INDEX "idx_journal_stack_status"
    ON "journal" ("stack", "status");
COMMIT;
