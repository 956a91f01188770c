-- Subquery corpus: each statement runs on Puffin and on DuckDB over the same tables (emp, dept,
-- sales, nums, obs, ...; see test_corpora.py) and the results must match, schema included.
-- Statements end with ';' at the end of a line.

-- scalar, correlated by equality, in the SELECT list (dept 5 has no employees: NULL / count 0)
SELECT d.dname, (SELECT max(e.salary) FROM emp e WHERE e.dept_id = d.id) AS top FROM dept d;
SELECT d.dname, (SELECT count(*) FROM emp e WHERE e.dept_id = d.id) AS n FROM dept d;
SELECT d.id, (SELECT count(*) FROM emp e WHERE e.dept_id = d.id) + 1 AS n1, (SELECT sum(e.salary) FROM emp e WHERE e.dept_id = d.id) AS s FROM dept d;
SELECT d.dname, (SELECT count(DISTINCT e.title) FROM emp e WHERE e.dept_id = d.id) AS titles FROM dept d;
SELECT d.dname, (SELECT e.name FROM emp e WHERE e.dept_id = d.id ORDER BY e.salary DESC LIMIT 1) AS best FROM dept d;
-- scalar, correlated by an inequality
SELECT e.name, (SELECT count(*) FROM emp e2 WHERE e2.salary > e.salary) AS richer FROM emp e;
SELECT e.name FROM emp e WHERE e.salary > (SELECT avg(e2.salary) FROM emp e2 WHERE e2.hired < e.hired);
SELECT s.emp_id, s.amount, (SELECT sum(s2.amount) FROM sales s2 WHERE s2.sold <= s.sold) AS running FROM sales s;
-- scalar, correlated by equality and an inequality together
SELECT e.name, (SELECT count(*) FROM emp e2 WHERE e2.dept_id = e.dept_id AND e2.hired < e.hired) AS seniors FROM emp e;
-- scalar, correlated, in WHERE, compared with an expression over aggregates
SELECT f.k, f.x FROM obs f WHERE f.x > (SELECT avg(g.x) + 3 * stddev_samp(g.x) FROM obs g WHERE g.k = f.k);
SELECT f.k, f.y FROM obs f WHERE f.y < (SELECT min(g.y) * 2 + count(*) / 10 FROM obs g WHERE g.k = f.k AND g.x < 50);
SELECT f.k, f.x, (SELECT avg(g.x) + 3 * stddev_samp(g.x) FROM obs g WHERE g.k = f.k) AS fence FROM obs f WHERE f.y = 3;
SELECT d.dname FROM dept d WHERE (SELECT count(*) FROM emp e WHERE e.dept_id = d.id) = 0;
SELECT d.dname FROM dept d WHERE (SELECT count(*) FROM emp e WHERE e.dept_id = d.id AND e.salary > 80000) >= 2;
-- scalar in HAVING: uncorrelated, and correlated with a grouping column
SELECT dept_id, avg(salary) AS a FROM emp GROUP BY dept_id HAVING avg(salary) > (SELECT avg(salary) FROM emp);
SELECT e.dept_id, count(*) AS n FROM emp e GROUP BY e.dept_id HAVING count(*) > (SELECT count(*) FROM sales s WHERE s.emp_id = e.dept_id);
SELECT k, max(x) AS top FROM obs o GROUP BY k HAVING max(x) > (SELECT avg(x) FROM obs o2 WHERE o2.k = o.k) * 2;
-- uncorrelated scalar subqueries
SELECT (SELECT max(name) FROM emp) AS m;
SELECT (SELECT max(name) FROM emp) AS m, (SELECT count(*) FROM dept) AS n, (SELECT min(amount) FROM sales WHERE amount > 1000) AS none;
SELECT name, (SELECT max(salary) FROM emp) - salary AS gap FROM emp;
SELECT name FROM emp WHERE hired = (SELECT max(hired) FROM emp);
SELECT e.name, d.dname FROM emp e JOIN dept d ON e.dept_id = d.id AND d.budget > (SELECT avg(budget) FROM dept);
-- EXISTS / NOT EXISTS
SELECT d.dname FROM dept d WHERE EXISTS (SELECT 1 FROM emp e WHERE e.dept_id = d.id AND e.title = 'eng');
SELECT d.dname FROM dept d WHERE NOT EXISTS (SELECT 1 FROM emp e WHERE e.dept_id = d.id);
SELECT e.name FROM emp e WHERE NOT EXISTS (SELECT 1 FROM dept d WHERE d.id = e.dept_id);
SELECT e.name FROM emp e WHERE EXISTS (SELECT 1 FROM sales s WHERE s.amount > e.salary / 1000);
SELECT e.name FROM emp e WHERE NOT EXISTS (SELECT 1 FROM sales s WHERE s.amount > e.salary / 1000);
SELECT e.name FROM emp e WHERE EXISTS (SELECT 1 FROM sales s WHERE s.emp_id = e.id AND s.sold > e.hired + INTERVAL 1500 DAY);
SELECT e.name FROM emp e WHERE EXISTS (SELECT 1 FROM sales s WHERE s.emp_id <> e.id AND s.amount = e.salary / 1000);
SELECT d.dname, EXISTS (SELECT 1 FROM emp e WHERE e.dept_id = d.id) AS staffed FROM dept d;
SELECT e.name, CASE WHEN EXISTS (SELECT 1 FROM sales s WHERE s.emp_id = e.id) THEN 'seller' ELSE 'other' END AS kind FROM emp e;
-- IN / NOT IN: uncorrelated, correlated, NULLs on either side
SELECT e.name FROM emp e WHERE e.id IN (SELECT s.emp_id FROM sales s WHERE s.amount > e.salary / 1000);
SELECT e.name FROM emp e WHERE e.id NOT IN (SELECT s.emp_id FROM sales s WHERE s.amount > e.salary / 1000);
SELECT e.name FROM emp e WHERE e.dept_id NOT IN (SELECT d.id FROM dept d WHERE d.budget > e.salary * 10);
SELECT id FROM dept WHERE id NOT IN (SELECT dept_id FROM emp);
SELECT id FROM dept WHERE id IN (SELECT dept_id FROM emp);
SELECT name, dept_id IN (SELECT id FROM dept WHERE budget > 1000000) AS big FROM emp;
SELECT name, dept_id NOT IN (SELECT dept_id FROM emp WHERE title = 'intern') AS not_intern_dept FROM emp;
SELECT k, v FROM nk WHERE k IN (SELECT k FROM nk2);
SELECT k, v FROM nk WHERE k NOT IN (SELECT k FROM nk2 WHERE k IS NOT NULL);
SELECT k, v FROM nk WHERE k NOT IN (SELECT k FROM nk2);
-- ANY / ALL
SELECT name FROM emp WHERE salary > ALL (SELECT salary FROM emp WHERE title = 'intern' OR title = 'sales');
SELECT name FROM emp WHERE salary = ANY (SELECT max(salary) FROM emp GROUP BY dept_id);
SELECT e.name FROM emp e WHERE e.salary * 10 > ALL (SELECT d.budget FROM dept d WHERE d.id = e.dept_id);
-- under OR
SELECT e.name FROM emp e WHERE e.title = 'intern' OR EXISTS (SELECT 1 FROM sales s WHERE s.emp_id = e.id);
SELECT e.name FROM emp e WHERE e.bonus IS NULL OR NOT EXISTS (SELECT 1 FROM sales s WHERE s.emp_id = e.id);
SELECT e.name FROM emp e WHERE e.title = 'mgr' OR e.salary > (SELECT avg(e2.salary) FROM emp e2 WHERE e2.dept_id = e.dept_id);
SELECT e.name FROM emp e WHERE e.dept_id = 4 OR e.id IN (SELECT emp_id FROM sales WHERE amount > 100);
SELECT e.name FROM emp e WHERE e.dept_id IS NULL OR e.id NOT IN (SELECT emp_id FROM sales);
SELECT e.name FROM emp e WHERE EXISTS (SELECT 1 FROM sales s WHERE s.emp_id = e.id AND s.amount > 100) OR EXISTS (SELECT 1 FROM dept d WHERE d.id = e.dept_id AND d.budget < 1000000);
-- nested two deep, correlated to the next level and to the outermost one
SELECT d.dname FROM dept d WHERE EXISTS (SELECT 1 FROM emp e WHERE e.dept_id = d.id AND EXISTS (SELECT 1 FROM sales s WHERE s.emp_id = e.id AND s.amount > 100));
SELECT d.dname FROM dept d WHERE EXISTS (SELECT 1 FROM emp e WHERE e.dept_id = d.id AND e.salary > (SELECT avg(e2.salary) FROM emp e2 WHERE e2.dept_id = d.id));
SELECT d.dname, (SELECT max(e.salary) FROM emp e WHERE e.dept_id = d.id AND e.id IN (SELECT s.emp_id FROM sales s WHERE s.amount * 1000 < d.budget)) AS top_seller FROM dept d;
SELECT e.name FROM emp e WHERE e.id IN (SELECT s.emp_id FROM sales s WHERE s.amount > (SELECT avg(s2.amount) FROM sales s2 WHERE s2.emp_id = s.emp_id));
-- subqueries in derived tables and CTEs
WITH top AS (SELECT e.dept_id, e.name FROM emp e WHERE e.salary = (SELECT max(e2.salary) FROM emp e2 WHERE e2.dept_id = e.dept_id)) SELECT d.dname, top.name FROM dept d LEFT JOIN top ON top.dept_id = d.id;
SELECT t.k, t.n FROM (SELECT o.k, (SELECT count(*) FROM obs o2 WHERE o2.k = o.k AND o2.x > o.x) AS n FROM obs o WHERE o.y = 5) t WHERE t.n < 5;
SELECT count(*) AS n FROM nums a WHERE a.v > (SELECT avg(b.v) FROM nums b WHERE b.k = a.k);
-- the same shapes over a table big enough to be split (nums: 3000 rows, 13 keys)
SELECT a.k, a.v, (SELECT max(b.v) FROM nums b WHERE b.k = a.k AND b.v < a.v) AS prev FROM nums a WHERE a.v % 97 = 0;
SELECT a.k, count(*) AS n FROM nums a WHERE NOT EXISTS (SELECT 1 FROM nums b WHERE b.k = a.k AND b.v = a.v + 13) GROUP BY a.k;
SELECT a.k, count(*) AS n FROM nums a WHERE a.v IN (SELECT b.v * 2 FROM nums b WHERE b.k = a.k) GROUP BY a.k;
SELECT count(*) AS n FROM nums a WHERE a.v NOT IN (SELECT b.v + 1 FROM nums b WHERE b.k = (a.k + 1) % 13);
SELECT a.k, sum(a.v) AS s FROM nums a GROUP BY a.k HAVING sum(a.v) > (SELECT avg(b.v) * 230 FROM nums b WHERE b.k = a.k);
