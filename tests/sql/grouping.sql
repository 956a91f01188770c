-- Grouping, windows, DuckDB's SQL extensions, nested and odd types, odd names: each statement
-- runs on Puffin and on DuckDB over the same tables (see test_corpora.py) and the results must
-- match, schema included. Statements end with ';' at the end of a line.

-- ROLLUP, CUBE, GROUPING SETS, GROUPING()
SELECT dept_id, title, sum(salary) AS s, count(*) AS n FROM emp GROUP BY ROLLUP (dept_id, title);
SELECT dept_id, title, sum(salary) AS s, grouping(dept_id, title) AS gid FROM emp GROUP BY ROLLUP (dept_id, title);
SELECT dept_id, title, count(*) AS n, GROUPING(dept_id) AS gd, GROUPING(title) AS gt FROM emp GROUP BY CUBE (dept_id, title);
SELECT dept_id, title, count(*) AS n, GROUPING(dept_id) AS gd, GROUPING(title) AS gt FROM emp GROUP BY GROUPING SETS ((dept_id), (title), ());
SELECT k, count(*) AS n, sum(v) AS s FROM nums GROUP BY GROUPING SETS ((k), ()) ORDER BY k NULLS FIRST;
SELECT g, b, sum(x) AS s, avg(a) AS m FROM t GROUP BY ROLLUP (g, b) HAVING count(*) > 1;
SELECT dept_id, title, count(DISTINCT name) AS names, max(hired) AS last FROM emp GROUP BY CUBE (dept_id, title) ORDER BY dept_id NULLS LAST, title NULLS LAST;
SELECT CASE WHEN GROUPING(dept_id) = 1 THEN 'all' ELSE CAST(dept_id AS VARCHAR) END AS dept, sum(salary) AS s FROM emp GROUP BY ROLLUP (dept_id);
SELECT dept_id, title, hired > DATE '2020-01-01' AS recent, count(*) AS n FROM emp GROUP BY GROUPING SETS ((dept_id, title), (dept_id, recent), (recent));
-- GROUP BY ALL
SELECT dept_id, title, count(*) AS n FROM emp GROUP BY ALL;
SELECT title, year(hired) AS y, sum(salary) AS s FROM emp GROUP BY ALL;
-- QUALIFY
SELECT g, a, row_number() OVER (PARTITION BY g ORDER BY a) AS rn FROM t QUALIFY rn = 1;
SELECT name, dept_id, salary FROM emp QUALIFY rank() OVER (PARTITION BY dept_id ORDER BY salary DESC) <= 2;
SELECT g, a, b FROM t QUALIFY a > avg(a) OVER (PARTITION BY g);
SELECT dept_id, sum(salary) AS s FROM emp GROUP BY dept_id QUALIFY row_number() OVER (ORDER BY sum(salary) DESC) <= 2;
-- DISTINCT ON
SELECT DISTINCT ON (dept_id) dept_id, name, salary FROM emp ORDER BY dept_id, salary DESC;
SELECT DISTINCT ON (title) title, name FROM emp ORDER BY title, name;
SELECT DISTINCT ON (g) g, a, b FROM t ORDER BY g, a DESC;
-- window frames
SELECT k, v, sum(v) OVER (PARTITION BY k ORDER BY v ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING) AS w FROM nums WHERE v < 200;
SELECT name, hired, sum(salary) OVER (ORDER BY hired RANGE BETWEEN INTERVAL 365 DAY PRECEDING AND CURRENT ROW) AS yr FROM emp;
SELECT g, a, avg(x) OVER (PARTITION BY g ORDER BY a RANGE BETWEEN 3 PRECEDING AND 3 FOLLOWING) AS near FROM t;
SELECT g, a, count(*) OVER (ORDER BY g GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW) AS c FROM t;
SELECT g, a, sum(a) OVER (PARTITION BY g ORDER BY a ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING EXCLUDE CURRENT ROW) AS others FROM t;
SELECT name, first_value(name) OVER w AS first, last_value(name) OVER w AS last, nth_value(name, 2) OVER w AS second FROM emp WINDOW w AS (PARTITION BY dept_id ORDER BY salary ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING);
SELECT name, ntile(3) OVER (ORDER BY salary) AS tile, percent_rank() OVER (ORDER BY salary) AS pr, cume_dist() OVER (ORDER BY salary) AS cd FROM emp;
SELECT name, lead(salary, 2, 0) OVER (PARTITION BY title ORDER BY hired) AS nxt, dense_rank() OVER (ORDER BY title) AS dr FROM emp;
SELECT g, a, sum(x) OVER (PARTITION BY g ORDER BY a) AS run, count(*) OVER () AS total FROM t;
-- SELECT * EXCLUDE / REPLACE / COLUMNS
SELECT * REPLACE (salary * 2 AS salary) FROM emp;
SELECT * EXCLUDE (bonus, hired) FROM emp WHERE dept_id = 1;
SELECT e.* EXCLUDE (bonus, dept_id), d.dname FROM emp e JOIN dept d ON e.dept_id = d.id;
SELECT * EXCLUDE (title) REPLACE (upper(name) AS name) FROM emp WHERE salary > 80000;
SELECT max(COLUMNS('^(id|budget)$')) FROM dept;
-- table functions
SELECT * FROM range(10);
SELECT * FROM generate_series(1, 3);
SELECT range AS r FROM range(10) WHERE range % 3 = 0;
SELECT unnest([1, 2, 3]) AS u;
SELECT * FROM unnest([1, 2, NULL]) AS u(x);
SELECT name, unnest(string_split(title, 'g')) AS part FROM emp WHERE dept_id = 1;
SELECT id, unnest(l) AS x FROM nested;
SELECT e.name, r.range AS copy FROM emp e, range(2) r WHERE e.dept_id = 2;
SELECT g.generate_series AS n, count(e.id) AS hired FROM generate_series(2015, 2024) g LEFT JOIN emp e ON year(e.hired) = g.generate_series GROUP BY 1;
-- WITH RECURSIVE
WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT sum(n) AS s, count(*) AS c FROM r;
WITH RECURSIVE up(id, root, depth) AS (SELECT id, id, 0 FROM tree WHERE parent IS NULL UNION ALL SELECT t.id, up.root, up.depth + 1 FROM tree t JOIN up ON t.parent = up.id) SELECT id, root, depth FROM up;
WITH RECURSIVE fib(i, a, b) AS (SELECT 1, 0::BIGINT, 1::BIGINT UNION ALL SELECT i + 1, b, a + b FROM fib WHERE i < 30) SELECT max(b) AS f FROM fib;
-- LATERAL
SELECT d.dname, x.name FROM dept d, LATERAL (SELECT name FROM emp e WHERE e.dept_id = d.id ORDER BY salary DESC LIMIT 1) x;
SELECT n, sq FROM range(5) t(n), LATERAL (SELECT n * n AS sq);
SELECT d.dname, x.n FROM dept d LEFT JOIN LATERAL (SELECT count(*) AS n FROM emp e WHERE e.dept_id = d.id AND e.salary > 60000) x ON true;
-- LIST / STRUCT / MAP values, and as group and join keys
SELECT [1, 2, 3] AS l, {'a': 1, 'b': 'x'} AS s, MAP {'k': 1} AS m, [[1], [], NULL] AS ll;
SELECT dept_id, list(name ORDER BY name) AS names, list(DISTINCT title ORDER BY title) AS titles FROM emp GROUP BY dept_id;
SELECT l, count(*) AS n FROM nested GROUP BY l;
SELECT s, count(*) AS n, list(id ORDER BY id) AS ids FROM nested GROUP BY s;
SELECT m, count(*) AS n FROM nested GROUP BY m;
SELECT a.id AS x, b.id AS y FROM nested a JOIN nested b ON a.l = b.l AND a.id < b.id;
SELECT a.id AS x, b.id AS y FROM nested a JOIN nested b ON a.s = b.s AND a.id <> b.id;
SELECT id, s.a AS a, s.b AS b, l[1] AS first, len(l) AS n, m['k'] AS mk FROM nested;
SELECT DISTINCT l FROM nested;
SELECT struct_pack(d := dept_id, t := title) AS key, count(*) AS n FROM emp GROUP BY 1;
-- NULL join and group keys
SELECT k, count(*) AS n, sum(v) AS s FROM nk GROUP BY k;
SELECT a.k, a.v, b.w FROM nk a JOIN nk2 b ON a.k = b.k;
SELECT a.k, a.v, b.w FROM nk a LEFT JOIN nk2 b ON a.k = b.k;
SELECT a.k AS ak, b.k AS bk, a.v, b.w FROM nk a FULL OUTER JOIN nk2 b ON a.k = b.k;
SELECT a.v, b.w FROM nk a JOIN nk2 b ON a.k IS NOT DISTINCT FROM b.k;
SELECT DISTINCT k FROM nk;
SELECT count(DISTINCT k) AS d, count(k) AS c, count(*) AS n FROM nk;
SELECT k FROM nk INTERSECT SELECT k FROM nk2;
SELECT k FROM nk EXCEPT SELECT k FROM nk2;
SELECT k FROM nk UNION SELECT k FROM nk2;
SELECT k, w FROM nk2 WHERE k IS NULL ORDER BY w;
-- TIME, INTERVAL and TIMESTAMP keys (1 day = 24 hours and 1 month = 30 days for DuckDB)
SELECT t, count(*) AS n, sum(v) AS s FROM tk GROUP BY t;
SELECT count(*) AS n, sum(v) AS s FROM tk GROUP BY iv;
SELECT ts, count(*) AS n FROM tk GROUP BY ts;
SELECT a.v AS av, b.v AS bv FROM tk a JOIN tk b ON a.t = b.t AND a.v < b.v;
SELECT a.v AS av, b.v AS bv FROM tk a JOIN tk b ON a.iv = b.iv AND a.v < b.v;
SELECT count(DISTINCT iv) AS d, count(DISTINCT t) AS dt FROM tk;
SELECT t + INTERVAL 90 MINUTE AS later, iv * 2 AS twice, ts + iv AS shifted FROM tk;
-- quoted identifiers: spaces, embedded quotes, reserved words, unicode, case-only differences
SELECT "Odd Name", "a""b", "select", "from" FROM odd;
SELECT "select", count(*) AS "Count Of", sum("a""b") AS "a""b" FROM odd GROUP BY "select";
SELECT o1."Odd Name", o2."a""b" FROM odd o1 JOIN odd o2 ON o1."X" = o2."from" / 10;
SELECT "naïve", "日本", sum("X") OVER (PARTITION BY "select" ORDER BY "a""b") AS "running X" FROM odd;
SELECT 1 AS "X", 2 AS "x", 'q' AS "group", 3 AS "Odd Name";
SELECT "Odd Name" AS "X", upper("Odd Name") AS "x" FROM odd;
SELECT "X" AS "Value", "X" * 2 AS "value2" FROM odd ORDER BY "Value" DESC;
SELECT id, label FROM "My Table";
SELECT o.id, o.qty FROM "order" o WHERE o.qty = 5;
SELECT "Odd Name", count(*) AS n FROM odd GROUP BY "Odd Name" HAVING count(*) > 1;
-- user columns and tables named like the engine's internal ones
SELECT __k0, count(*) AS __a0, sum(__one) AS __w0, max(__bounds) AS __o0 FROM internals GROUP BY __k0;
SELECT __pid, __k0, row_number() OVER (PARTITION BY __k0 ORDER BY __o0, __a0) AS __w0 FROM internals;
SELECT a.__a0, b.__bounds, a.__gid FROM internals a JOIN internals b ON a.__k0 = b.__k0 AND a.__pid = b.__pid WHERE a.__a0 < b.__a0;
SELECT __bounds, __a0, "__src_0" FROM internals ORDER BY __bounds;
SELECT __g0, __sj0_0, sum(__in0) AS __in0, GROUPING(__g0) AS __gid FROM internals GROUP BY ROLLUP (__g0, __sj0_0);
SELECT DISTINCT __pid, __g0 FROM internals;
SELECT __k0 FROM internals WHERE __a0 IN (SELECT __in0 * 2 FROM internals WHERE __pid = 1);
SELECT __gid, __t FROM __t;
SELECT count(*) AS __one, avg(__w0) AS __a1 FROM internals;
-- the same shapes over a table big enough to be split (nums: 3000 rows, 13 keys)
SELECT k, v % 3 AS m, count(*) AS n, sum(v) AS s, GROUPING(k, m) AS gid FROM nums GROUP BY CUBE (k, m);
SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM nums QUALIFY rn <= 2;
SELECT DISTINCT ON (k) k, v FROM nums ORDER BY k, v DESC;
SELECT k, v, sum(v) OVER (PARTITION BY k ORDER BY v RANGE BETWEEN 26 PRECEDING AND CURRENT ROW) AS w FROM nums WHERE v % 5 = 0;
SELECT k % 4 AS g, list(DISTINCT k ORDER BY k) AS ks, count(*) AS n FROM nums GROUP BY ALL;
SELECT [k, k % 2] AS key, count(*) AS n FROM nums GROUP BY key;
