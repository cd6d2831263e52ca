-- 100 000 rows, an index, queries; the output must not depend on the
-- allocator.
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, val REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO t(id, name, grp, val)
  SELECT i, printf('name-%08d-%s', (i * 7919) % 100003, hex(i * 31)), i % 97, (i * 13 % 1000) / 7.0 FROM n;
CREATE INDEX t_name ON t(name);
CREATE INDEX t_grp ON t(grp, val);
SELECT count(*), sum(grp), round(sum(val), 3) FROM t;
SELECT grp, count(*), round(avg(val), 4), min(name), max(name) FROM t GROUP BY grp ORDER BY grp LIMIT 10;
SELECT name FROM t WHERE name BETWEEN 'name-00050000' AND 'name-00050100' ORDER BY name;
SELECT a.grp, count(*) FROM t a JOIN t b ON a.id = b.id + 1 AND a.grp = b.grp + 1 GROUP BY a.grp ORDER BY 2 DESC, 1 LIMIT 5;
UPDATE t SET name = upper(name) WHERE grp < 10;
DELETE FROM t WHERE id % 3 = 0;
SELECT count(*), count(DISTINCT substr(name, 1, 9)) FROM t;
